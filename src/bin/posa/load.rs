//! A TCP load generator for echo and the work service: closed loop (a fixed number of
//! messages in flight per connection) or open loop (a fixed offered rate, at fixed intervals
//! or as a Poisson process). In open loop, latency is measured both from each message's
//! intended send time (so a slow server cannot hide its queueing: no coordinated omission,
//! as wrk2 does) and from when it was actually sent (what a closed-loop tool would report).
//! Every reply byte is checked. With a work mix, each message is a work request
//! (`posa::server::WorkService`) whose work is drawn from the mix; the reply is the request.
//! With churn, every message goes over a connection of its own (connect, request, reply,
//! close): the accept and connect path. Idle connections ([`open_idle`]) are held open beside
//! the measured ones.
//!
//! One client thread drives every connection through one `mio::Poll`. Memory is bounded: in
//! open loop at most [`MAX_OUTSTANDING`] messages wait per connection; beyond that, sends due
//! are held back and their latency keeps counting from when they were due.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Messages waiting per connection in open loop, at most.
pub const MAX_OUTSTANDING: usize = 10_000;

/// How open-loop sends are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrivals {
    /// At a fixed interval per connection.
    #[default]
    Fixed,
    /// As a Poisson process: exponential gaps with the same mean.
    Poisson,
}

impl FromStr for Arrivals {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fixed" => Ok(Arrivals::Fixed),
            "poisson" => Ok(Arrivals::Poisson),
            other => Err(format!(
                "unknown arrivals {other:?}: expected fixed or poisson"
            )),
        }
    }
}

/// What to offer.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server.
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
    /// Open loop: how sends are spaced.
    pub arrivals: Arrivals,
    /// Send work requests drawn from this mix (the server runs the work service); `None`:
    /// plain echo.
    pub work: Option<posa::server::WorkMix>,
    /// A new connection for every message (connect, request, reply, close).
    pub churn: bool,
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
            arrivals: Arrivals::Fixed,
            work: None,
            churn: false,
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
    /// Connections that failed (reset, closed early, wrong bytes).
    pub errors: u64,
    /// Connection attempts refused or failed (counted apart: under churn or overload a
    /// refused connection is the server shedding load, and the attempt is made again).
    pub refused: u64,
    /// Connections opened (more than `conns` under churn).
    pub connects: u64,
    /// How long it measured.
    pub elapsed: Duration,
    /// Round-trip latency per message from its intended send time, in nanoseconds.
    pub latency: hdrhistogram::Histogram<u64>,
    /// Round-trip latency per message from when its first byte was written (equal to
    /// `latency` in closed loop).
    pub latency_sent: hdrhistogram::Histogram<u64>,
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

    /// A latency percentile (from the intended send time).
    pub fn percentile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }

    /// A latency percentile from the actual send time.
    pub fn percentile_sent(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency_sent.value_at_quantile(q))
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
            "{} messages in {:.2?} ({} loop), {} errors, {} connects ({} refused)",
            self.messages,
            self.elapsed,
            if self.open_loop { "open" } else { "closed" },
            self.errors,
            self.connects,
            self.refused
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
        if self.open_loop {
            let _ = writeln!(
                s,
                "latency from the actual send (what a closed-loop tool reports): p50 {:.1?}  p99 {:.1?}  max {:.1?}",
                self.percentile_sent(0.5),
                self.percentile_sent(0.99),
                Duration::from_nanos(self.latency_sent.max())
            );
        }
        s
    }

    /// One JSON object (serde).
    pub fn json(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let v = serde_json::json!({
            "messages": self.messages,
            "bytes": self.bytes,
            "errors": self.errors,
            "refused": self.refused,
            "connects": self.connects,
            "seconds": self.elapsed.as_secs_f64(),
            "open_loop": self.open_loop,
            "msgs_per_sec": self.msgs_per_sec(),
            "bytes_per_sec": self.bytes_per_sec(),
            "p50_us": us(self.percentile(0.5)),
            "p90_us": us(self.percentile(0.9)),
            "p99_us": us(self.percentile(0.99)),
            "p999_us": us(self.percentile(0.999)),
            "max_us": us(self.max()),
            "sent_p50_us": us(self.percentile_sent(0.5)),
            "sent_p99_us": us(self.percentile_sent(0.99)),
        });
        v.to_string()
    }
}

/// One message not yet answered.
struct Msg {
    /// When it was issued (closed loop) or due (open loop).
    due: Instant,
    /// When its first byte was written.
    sent_at: Option<Instant>,
    header: Header,
}

struct Conn {
    /// `None` between a churned connection's close and its next connect.
    stream: Option<TcpStream>,
    /// Bytes written so far / that should be written (messages issued * size), on this
    /// stream.
    sent: u64,
    target: u64,
    received: u64,
    /// The messages not yet back, oldest first.
    issued: VecDeque<Msg>,
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
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A message due at `due`.
    fn issue(&mut self, due: Instant) -> Msg {
        let header = match self.work {
            Some(mix) => {
                let work = mix.draw(&mut self.rng);
                let seed = (self.next_random() >> 32) as u32;
                work.header(self.size as usize, seed)
            }
            None => [0; HEADER],
        };
        Msg {
            due,
            sent_at: None,
            header,
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

    /// The gap to the next open-loop send: `mean`, or an exponential draw with that mean.
    fn gap(&mut self, mean: Duration, arrivals: Arrivals) -> Duration {
        match arrivals {
            Arrivals::Fixed => mean,
            Arrivals::Poisson => {
                let u = ((self.next_random() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                mean.mul_f64(-u.ln()).min(mean * 50)
            }
        }
    }
}

fn pattern_byte(offset: u64) -> u8 {
    (offset % PATTERN) as u8
}

/// A connected, non-blocking client stream registered under `token`.
fn open(addr: SocketAddr, poll: &Poll, token: usize) -> io::Result<TcpStream> {
    let std_stream = std::net::TcpStream::connect(addr)?;
    std_stream.set_nodelay(true)?;
    std_stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(std_stream);
    poll.registry().register(
        &mut stream,
        Token(token),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(stream)
}

/// Connections that send nothing, held open beside a measurement. Dropping them resets them
/// (SO_LINGER 0): closing 10,000 connections per model and round in order would leave as
/// many client ports in TIME_WAIT and run the loopback out of ports within a suite.
pub struct Idle {
    held: Vec<std::net::TcpStream>,
}

impl Idle {
    /// Connections open.
    #[allow(
        clippy::len_without_is_empty,
        reason = "a count for a report, not a collection"
    )]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        for s in &self.held {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
}

/// Lifts this process's open-file limit to its hard limit (10,000 idle connections need
/// more than the usual 1,024); the servers inherit it.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Opens `n` idle connections; returns them and how many could not be opened.
pub fn open_idle(addr: SocketAddr, n: usize) -> (Idle, usize) {
    if n > 0 {
        raise_fd_limit();
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => held.push(s),
            Err(e) => {
                tracing::debug!(error = %e, "load: an idle connection failed");
                failed += 1;
            }
        }
    }
    (Idle { held }, failed)
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
    let mut kind = Messages {
        size,
        work: config.work.as_ref(),
        rng: 0x2545_f491_4f6c_dd1d,
    };
    let conns = config.conns.max(1);
    let mut poll = Poll::new()?;
    let mut list = Vec::with_capacity(conns);
    let start = Instant::now();
    let mut connects = 0u64;
    for i in 0..conns {
        // Under churn a connection opens when its message is issued.
        let stream = if config.churn {
            None
        } else {
            connects += 1;
            Some(open(config.addr, &poll, i).map_err(|e| {
                io::Error::new(e.kind(), format!("connection {} of {conns}: {e}", i + 1))
            })?)
        };
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
    let histogram = || {
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    };
    let mut lat = Latency {
        intended: histogram()?,
        sent: histogram()?,
    };
    let mean_gap = config
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(conns as f64 / r));
    let begin = Instant::now();
    let end = begin + config.duration;
    let (mut messages, mut errors, mut refused) = (0u64, 0u64, 0u64);
    let in_flight = if config.churn {
        1
    } else {
        config.pipeline.max(1)
    };
    for c in &mut list {
        c.next_due = begin;
        if let Some(gap) = mean_gap {
            // Spread the first sends over one gap, so connections do not fire in step.
            c.next_due = begin + kind.gap(gap, Arrivals::Poisson).min(gap);
        } else {
            for _ in 0..in_flight {
                c.issued.push_back(kind.issue(begin));
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
        // Open loop: issue what is due (one at a time per connection under churn).
        let mut next_wake = end;
        if let Some(gap) = mean_gap {
            let cap = if config.churn { 1 } else { MAX_OUTSTANDING };
            for (c, v) in list
                .iter_mut()
                .zip(visit.iter_mut())
                .filter(|(c, _)| !c.dead)
            {
                while c.next_due <= now && c.issued.len() < cap {
                    c.issued.push_back(kind.issue(c.next_due));
                    c.target += size;
                    c.next_due += kind.gap(gap, config.arrivals);
                    *v = true;
                }
                next_wake = next_wake.min(c.next_due);
            }
        }
        for (i, c) in list.iter_mut().enumerate() {
            if c.dead || !std::mem::take(&mut visit[i]) {
                continue;
            }
            if c.stream.is_none() {
                if c.issued.is_empty() {
                    continue; // churn, open loop: nothing due yet
                }
                match open(config.addr, &poll, i) {
                    Ok(s) => {
                        connects += 1;
                        c.stream = Some(s);
                        c.sent = 0;
                        c.target = size * c.issued.len() as u64;
                        c.received = 0;
                    }
                    Err(e) => {
                        // Refused (backlog full, limit): the message waits, its latency
                        // counting; try again on a later pass.
                        tracing::debug!(conn = i, error = %e, "load: connect failed");
                        refused += 1;
                        next_wake = next_wake.min(Instant::now() + Duration::from_millis(1));
                        continue;
                    }
                }
            }
            match pump(
                c,
                &source,
                &mut scratch,
                &mut kind,
                &mut lat,
                mean_gap.is_none(),
                config.churn,
            ) {
                Ok((done, more)) => {
                    messages += done;
                    visit[i] = more;
                    if config.churn && done > 0 {
                        // One message per connection: close (the server sees the end of
                        // stream) and connect afresh for the next.
                        if let Some(mut s) = c.stream.take() {
                            let _ = poll.registry().deregister(&mut s);
                        }
                        visit[i] = mean_gap.is_none() || !c.issued.is_empty();
                    }
                }
                Err(e) => {
                    tracing::debug!(conn = i, error = %e, "load: connection failed");
                    errors += 1;
                    if let Some(mut s) = c.stream.take() {
                        let _ = poll.registry().deregister(&mut s);
                    }
                    if config.churn {
                        // Lost with its connection: the message is not answered; the next
                        // one goes over a new connection.
                        c.issued.clear();
                        if mean_gap.is_none() {
                            c.issued.push_back(kind.issue(Instant::now()));
                        }
                        visit[i] = true;
                    } else {
                        c.dead = true;
                    }
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
        if config.churn {
            // A closed connection has no events: revisit those with a message waiting.
            for (c, v) in list.iter().zip(visit.iter_mut()) {
                if c.stream.is_none() && !c.issued.is_empty() {
                    *v = true;
                }
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
        refused,
        connects,
        elapsed: if stop.load(Ordering::Relaxed) {
            begin.elapsed()
        } else {
            elapsed
        },
        latency: lat.intended,
        latency_sent: lat.sent,
        open_loop: mean_gap.is_some(),
    })
}

/// The two latency histograms: from the intended send time, and from the actual one.
struct Latency {
    intended: hdrhistogram::Histogram<u64>,
    sent: hdrhistogram::Histogram<u64>,
}

impl Latency {
    fn record(&mut self, msg: &Msg) {
        let ns = |at: Instant| u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.intended.saturating_record(ns(msg.due).max(1));
        self.sent
            .saturating_record(ns(msg.sent_at.unwrap_or(msg.due)).max(1));
    }
}

/// Writes what is owed and reads what came back; returns messages completed, and whether
/// the visit stopped at its bound with work left (the socket's edge is spent: come back).
fn pump(
    c: &mut Conn,
    source: &[u8],
    scratch: &mut [u8],
    kind: &mut Messages<'_>,
    lat: &mut Latency,
    closed_loop: bool,
    churn: bool,
) -> io::Result<(u64, bool)> {
    let size = kind.size;
    let Some(stream) = c.stream.as_mut() else {
        return Ok((0, false));
    };
    let mut done = 0;
    // Bounded per visit: a connection the server keeps up with must not starve the others
    // (its next messages wait for the next pass, like everyone else's).
    for _ in 0..4 {
        let mut progress = false;
        while c.sent < c.target {
            let len = ((c.target - c.sent) as usize).min(64 * 1024);
            let first = c.received / size;
            let chunk = if kind.work.is_none() {
                let off = (c.sent % PATTERN) as usize;
                &source[off..off + len]
            } else {
                // Work requests: the headers of the messages being written, pattern between.
                let out = &mut scratch[..len];
                for (i, b) in out.iter_mut().enumerate() {
                    let o = c.sent + i as u64;
                    let header = c
                        .issued
                        .get((o / size - first) as usize)
                        .map_or(&[0; HEADER], |m| &m.header);
                    *b = kind.byte(o, header);
                }
                &scratch[..len]
            };
            match stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    // Messages whose first byte went out now: their actual send time.
                    let now = Instant::now();
                    let from = c.sent.div_ceil(size);
                    c.sent += n as u64;
                    let to = c.sent.div_ceil(size);
                    for m in from..to {
                        if let Some(msg) = c.issued.get_mut((m - first) as usize) {
                            msg.sent_at.get_or_insert(now);
                        }
                    }
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match stream.read(scratch) {
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
                        .map_or(&[0; HEADER], |m| &m.header);
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
                    if let Some(msg) = c.issued.pop_front() {
                        lat.record(&msg);
                    }
                    done += 1;
                    if closed_loop {
                        c.issued.push_back(kind.issue(Instant::now()));
                        c.target += size;
                    }
                }
                progress = true;
                if churn && done > 0 {
                    return Ok((done, false)); // this connection is done: no further writes
                }
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
