//! A TCP echo load generator: closed loop (a fixed number of messages in flight per
//! connection) or open loop (a fixed offered rate, latency measured from each message's
//! intended send time, so a slow server cannot hide its queueing: no coordinated omission, as
//! wrk2 does). Every echoed byte is checked. With a work mix, each message is a work request
//! (`posa::server::WorkService`) whose work is drawn from the mix; the reply is checked the
//! same way (it is the request).
//!
//! One client thread drives every connection through one `mio::Poll`. Memory is bounded: in
//! open loop at most [`MAX_OUTSTANDING`] messages wait per connection; beyond that, sends due
//! are held back and their latency keeps counting from when they were due.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Messages waiting per connection in open loop, at most.
pub const MAX_OUTSTANDING: usize = 10_000;

/// What to offer.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The echo server.
    pub addr: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Bytes per message.
    pub size: usize,
    /// How long to measure.
    pub duration: Duration,
    /// Messages in flight per connection (closed loop).
    pub pipeline: usize,
    /// Messages per second over all connections (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// Send work requests drawn from this mix (the server runs the work service); `None`:
    /// plain echo.
    pub work: Option<posa::server::WorkMix>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            addr: ([127, 0, 0, 1], 7000).into(),
            conns: 50,
            size: 64,
            duration: Duration::from_secs(5),
            pipeline: 1,
            rate: None,
            work: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Messages echoed back, complete and correct.
    pub messages: u64,
    /// Bytes echoed back.
    pub bytes: u64,
    /// Connections that failed (refused, reset, wrong bytes).
    pub errors: u64,
    /// How long it measured.
    pub elapsed: Duration,
    /// Round-trip latency per message, in nanoseconds.
    pub latency: hdrhistogram::Histogram<u64>,
    /// Open loop (latency from the intended send time) or closed loop.
    pub open_loop: bool,
}

impl LoadReport {
    /// Messages a second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes a second (one way).
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile.
    pub fn percentile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.latency.max())
    }

    /// A small table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} messages in {:.2?} ({} loop), {} errors",
            self.messages,
            self.elapsed,
            if self.open_loop { "open" } else { "closed" },
            self.errors
        );
        let _ = writeln!(
            s,
            "throughput: {:.0} msgs/s, {:.2} MB/s",
            self.msgs_per_sec(),
            self.bytes_per_sec() / 1e6
        );
        let _ = writeln!(
            s,
            "latency: p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  p99.9 {:.1?}  max {:.1?}",
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(0.999),
            self.max()
        );
        s
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        format!(
            "{{\"messages\":{},\"bytes\":{},\"errors\":{},\"seconds\":{:.3},\"open_loop\":{},\
             \"msgs_per_sec\":{:.1},\"bytes_per_sec\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\
             \"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}}}",
            self.messages,
            self.bytes,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.open_loop,
            self.msgs_per_sec(),
            self.bytes_per_sec(),
            us(self.percentile(0.5)),
            us(self.percentile(0.9)),
            us(self.percentile(0.99)),
            us(self.percentile(0.999)),
            us(self.max())
        )
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes written so far / that should be written (messages issued * size).
    sent: u64,
    target: u64,
    received: u64,
    /// When each message not yet back was issued (or due, in open loop), and its work header
    /// (work requests only).
    issued: VecDeque<(Instant, Header)>,
    /// Open loop: when the next message is due.
    next_due: Instant,
    dead: bool,
}

const PATTERN: u64 = 251;
const HEADER: usize = posa::server::WORK_HEADER;
type Header = [u8; HEADER];

/// What a message is: plain echo bytes, or a work request whose header is drawn from a mix.
struct Messages<'a> {
    size: u64,
    work: Option<&'a posa::server::WorkMix>,
    rng: u64,
}

impl Messages<'_> {
    /// The header of the next message issued (unused for echo).
    fn next_header(&mut self) -> Header {
        match self.work {
            Some(mix) => {
                let work = mix.draw(&mut self.rng);
                let seed = (self.rng >> 32) as u32;
                work.header(self.size as usize, seed)
            }
            None => [0; HEADER],
        }
    }

    /// The byte at stream offset `o`, given the header of its message.
    fn byte(&self, o: u64, header: &Header) -> u8 {
        let pos = (o % self.size) as usize;
        if self.work.is_some() && pos < HEADER {
            header[pos]
        } else {
            pattern_byte(o)
        }
    }
}

fn pattern_byte(offset: u64) -> u8 {
    (offset % PATTERN) as u8
}

/// Runs the load until `config.duration` passes or `stop` is set; `progress` gets the fraction
/// done now and then.
pub fn run(
    config: &LoadConfig,
    stop: &AtomicBool,
    mut progress: impl FnMut(f64),
) -> io::Result<LoadReport> {
    let size = config.size.max(1) as u64;
    if config.work.is_some() && size < HEADER as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("work requests need messages of at least {HEADER} bytes"),
        ));
    }
    let mut messages_kind = Messages {
        size,
        work: config.work.as_ref(),
        rng: 0x2545_f491_4f6c_dd1d,
    };
    let conns = config.conns.max(1);
    let mut poll = Poll::new()?;
    let mut list = Vec::with_capacity(conns);
    let start = Instant::now();
    for i in 0..conns {
        let std_stream = std::net::TcpStream::connect(config.addr)?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        list.push(Conn {
            stream,
            sent: 0,
            target: 0,
            received: 0,
            issued: VecDeque::new(),
            next_due: start,
            dead: false,
        });
    }
    // Payload source: any window of the pattern is a slice of this buffer.
    let source: Vec<u8> = (0..64 * 1024 + PATTERN).map(pattern_byte).collect();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    let interval = config
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(conns as f64 / r));
    let begin = Instant::now();
    let end = begin + config.duration;
    let (mut messages, mut errors) = (0u64, 0u64);
    for c in &mut list {
        c.next_due = begin;
        if interval.is_none() {
            for _ in 0..config.pipeline.max(1) {
                c.issued.push_back((begin, messages_kind.next_header()));
                c.target += size;
            }
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut last_progress = begin;
    // Connections to visit this pass: those with readiness, new sends, or work left over from
    // a bounded visit. Not every connection every pass: idle sockets cost no system calls.
    let mut visit = vec![true; list.len()];
    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        if now.duration_since(last_progress) >= Duration::from_millis(100) {
            progress(now.duration_since(begin).as_secs_f64() / config.duration.as_secs_f64());
            last_progress = now;
        }
        // Open loop: issue what is due.
        let mut next_wake = end;
        if let Some(every) = interval {
            for (c, v) in list
                .iter_mut()
                .zip(visit.iter_mut())
                .filter(|(c, _)| !c.dead)
            {
                while c.next_due <= now && c.issued.len() < MAX_OUTSTANDING {
                    c.issued
                        .push_back((c.next_due, messages_kind.next_header()));
                    c.target += size;
                    c.next_due += every;
                    *v = true;
                }
                next_wake = next_wake.min(c.next_due);
            }
        }
        for (i, c) in list.iter_mut().enumerate() {
            if c.dead || !std::mem::take(&mut visit[i]) {
                continue;
            }
            match pump(
                c,
                &source,
                &mut scratch,
                &mut messages_kind,
                &mut latency,
                interval.is_none(),
            ) {
                Ok((done, more)) => {
                    messages += done;
                    visit[i] = more;
                }
                Err(e) => {
                    tracing::debug!(conn = i, error = %e, "load: connection failed");
                    c.dead = true;
                    errors += 1;
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
        if list.iter().all(|c| c.dead) {
            break;
        }
        let wait = if visit.iter().any(|v| *v) {
            Duration::ZERO // work left over from a bounded visit: do not sleep on it
        } else {
            next_wake
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        };
        match poll.poll(&mut events, Some(wait)) {
            // A signal landed (a child server exiting, a terminal resize): poll again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            other => other?,
        }
        for ev in events.iter() {
            if let Some(v) = visit.get_mut(ev.token().0) {
                *v = true;
            }
        }
    }
    progress(1.0);
    let elapsed = begin
        .elapsed()
        .min(config.duration.max(Duration::from_millis(1)));
    Ok(LoadReport {
        messages,
        bytes: messages * size,
        errors,
        elapsed: if stop.load(Ordering::Relaxed) {
            begin.elapsed()
        } else {
            elapsed
        },
        latency,
        open_loop: interval.is_some(),
    })
}

/// Writes what is owed and reads what came back; returns messages completed, and whether
/// the visit stopped at its bound with work left (the socket's edge is spent: come back).
fn pump(
    c: &mut Conn,
    source: &[u8],
    scratch: &mut [u8],
    kind: &mut Messages<'_>,
    latency: &mut hdrhistogram::Histogram<u64>,
    closed_loop: bool,
) -> io::Result<(u64, bool)> {
    let size = kind.size;
    let mut done = 0;
    // Bounded per visit: a connection the server keeps up with must not starve the others
    // (its next messages wait for the next pass, like everyone else's).
    for _ in 0..4 {
        let mut progress = false;
        while c.sent < c.target {
            let len = ((c.target - c.sent) as usize).min(64 * 1024);
            let chunk = if kind.work.is_none() {
                let off = (c.sent % PATTERN) as usize;
                &source[off..off + len]
            } else {
                // Work requests: the headers of the messages being written, pattern between.
                let first = c.received / size;
                let out = &mut scratch[..len];
                for (i, b) in out.iter_mut().enumerate() {
                    let o = c.sent + i as u64;
                    let header = c
                        .issued
                        .get((o / size - first) as usize)
                        .map_or(&[0; HEADER], |(_, h)| h);
                    *b = kind.byte(o, header);
                }
                &scratch[..len]
            };
            match c.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    c.sent += n as u64;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match c.stream.read(scratch) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let first = c.received / size;
                let wrong = scratch[..n].iter().enumerate().any(|(i, b)| {
                    let o = c.received + i as u64;
                    if kind.work.is_none() {
                        return *b != pattern_byte(o);
                    }
                    let header = c
                        .issued
                        .get((o / size - first) as usize)
                        .map_or(&[0; HEADER], |(_, h)| h);
                    *b != kind.byte(o, header)
                });
                if wrong {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server returned a wrong byte",
                    ));
                }
                let before = c.received / size;
                c.received += n as u64;
                for _ in before..c.received / size {
                    if let Some((at, _)) = c.issued.pop_front() {
                        let ns = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        latency.saturating_record(ns.max(1));
                    }
                    done += 1;
                    if closed_loop {
                        c.issued.push_back((Instant::now(), kind.next_header()));
                        c.target += size;
                    }
                }
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
            Err(e) => return Err(e),
        }
        if !progress {
            return Ok((done, false));
        }
    }
    Ok((done, true))
}
