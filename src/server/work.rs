//! A request/response service whose requests say what work the server must do before it
//! replies: the workloads of `posa compare` (computation, a blocking wait, a heavy tail, cold
//! file reads), the same on every model. The reply is the request itself, so a load generator
//! checks every byte as it does for echo.
//!
//! # Wire format
//! A request is a 16-byte header, then padding up to its length; the reply is the same bytes.
//!
//! | bytes | field |
//! |---|---|
//! | 0..2 | magic `b"PW"` |
//! | 2 | kind: 0 none, 1 compute, 2 block, 3 file read |
//! | 3 | 0 |
//! | 4..8 | total length in bytes, header included (u32, little endian), 16..=`max_request` |
//! | 8..12 | amount: microseconds (compute, block) or bytes (file read) (u32 LE) |
//! | 12..16 | seed: picks the file offset (u32 LE) |
//!
//! A [`WorkMix`] is what a load generator draws each request's work from, written as
//! comma-separated entries `[P%]KIND[:LOW[-HIGH]]` (uniform between LOW and HIGH):
//! `none`, `cpu:20us-50us`, `block:1ms`, `99%cpu:10us,1%block:10ms`, `file:4KiB-64KiB`.
//!
//! ```
//! use posa::server::{Work, WorkMix, WorkService};
//! use posa::net::Service;
//! use std::time::Duration;
//!
//! let mix: WorkMix = "99%cpu:10us,1%block:10ms".parse()?;
//! let mut rng = 7u64;
//! let work = mix.draw(&mut rng);
//! assert!(matches!(work, Work::Compute(_) | Work::Block(_)));
//!
//! let mut request = Vec::new();
//! Work::Compute(Duration::from_micros(5)).encode(64, 0, &mut request);
//! let service = WorkService::new();
//! assert_eq!(service.frame(&request[..10]).unwrap(), None); // a partial header
//! assert_eq!(service.frame(&request).unwrap(), Some(64));
//! let mut reply = Vec::new();
//! service.call(&request, &mut reply);
//! assert_eq!(reply, request);
//! # Ok::<(), posa::server::BadWorkMix>(())
//! ```

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::net::{ProtocolError, Service};

/// Bytes of a request's header.
pub const HEADER: usize = 16;
const MAGIC: &[u8; 2] = b"PW";
/// Longest request a [`WorkService`] accepts.
pub const MAX_REQUEST: usize = 1 << 20;
/// Most work one request may ask for (compute or block), and most bytes one file read.
pub const MAX_AMOUNT: u32 = 10_000_000;

/// The work one request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Reply at once.
    None,
    /// Compute (spin on arithmetic) this long.
    Compute(Duration),
    /// Block (sleep) this long: a stand-in for a database call.
    Block(Duration),
    /// Read this many bytes at an offset chosen by the seed from the service's file.
    ReadFile(u32),
}

impl Work {
    fn kind_amount(self) -> (u8, u32) {
        let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        match self {
            Work::None => (0, 0),
            Work::Compute(d) => (1, micros(d)),
            Work::Block(d) => (2, micros(d)),
            Work::ReadFile(n) => (3, n),
        }
    }

    /// Appends a request of `len` bytes (at least [`HEADER`]; shorter is padded up) asking
    /// for this work; the padding is zeros. `seed` picks the file offset of a file read.
    pub fn encode(self, len: usize, seed: u32, out: &mut Vec<u8>) {
        let len = len.max(HEADER);
        let (kind, amount) = self.kind_amount();
        out.extend_from_slice(MAGIC);
        out.push(kind);
        out.push(0);
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&amount.min(MAX_AMOUNT).to_le_bytes());
        out.extend_from_slice(&seed.to_le_bytes());
        out.resize(out.len() + len - HEADER, 0);
    }

    /// The header of a request of `len` bytes asking for this work.
    pub fn header(self, len: usize, seed: u32) -> [u8; HEADER] {
        let mut v = Vec::with_capacity(HEADER);
        self.encode(HEADER, seed, &mut v);
        v[4..8].copy_from_slice(
            &u32::try_from(len.max(HEADER))
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&v);
        h
    }
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// The service: frames requests by their header, does their work, replies with the request.
/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct WorkService {
    file: Option<(File, u64)>,
}

impl WorkService {
    /// A service without a file (a file read is answered without reading).
    pub fn new() -> Self {
        Self::default()
    }

    /// A service whose file reads read `path` (which must be at least 64 KiB long).
    pub fn with_file(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < 64 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: a work file needs at least 64 KiB", path.display()),
            ));
        }
        Ok(Self {
            file: Some((file, len)),
        })
    }

    fn read_file(&self, bytes: u32, seed: u32) {
        let Some((file, len)) = &self.file else {
            return;
        };
        let bytes = u64::from(bytes).min(*len);
        // A 4 KiB-aligned offset the seed picks, then the range is dropped from the page
        // cache again, so reads stay cold (Flash's disk-bound case).
        let slots = (len - bytes) / 4096 + 1;
        let offset = (u64::from(seed) % slots) * 4096;
        let mut buf = vec![0u8; bytes as usize];
        let _ = file.read_exact_at(&mut buf, offset);
        std::hint::black_box(&buf);
        drop_cached(file, offset, bytes);
    }
}

/// Asks the kernel to forget `len` bytes of `file` at `offset` (posix_fadvise DONTNEED).
fn drop_cached(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is open for the call.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
}

/// Spins on arithmetic for `d`: the compute stand-in.
fn compute(d: Duration) {
    let start = Instant::now();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while start.elapsed() < d {
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

impl Service for WorkService {
    fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if input.len() < 2 {
            return Ok(None);
        }
        if &input[..2] != MAGIC {
            return Err(ProtocolError::new("not a work request (bad magic)"));
        }
        if input.len() < HEADER {
            return Ok(None);
        }
        let len = le32(&input[4..]) as usize;
        if !(HEADER..=MAX_REQUEST).contains(&len) {
            return Err(ProtocolError::new(format!(
                "a work request of {len} bytes (expected {HEADER}..={MAX_REQUEST})"
            )));
        }
        if input[2] > 3 {
            return Err(ProtocolError::new(format!(
                "unknown work kind {}",
                input[2]
            )));
        }
        Ok((input.len() >= len).then_some(len))
    }

    fn call(&self, request: &[u8], reply: &mut Vec<u8>) {
        if request.len() < HEADER {
            return reply.extend_from_slice(request); // not framed by `frame`: no work
        }
        let amount = le32(&request[8..]).min(MAX_AMOUNT);
        match request[2] {
            1 => compute(Duration::from_micros(amount.into())),
            2 => std::thread::sleep(Duration::from_micros(amount.into())),
            3 => self.read_file(amount, le32(&request[12..])),
            _ => {}
        }
        reply.extend_from_slice(request);
    }

    fn max_request(&self) -> usize {
        MAX_REQUEST
    }
}

/// A distribution of work: entries drawn by weight, each uniform between its bounds. See the
/// [module docs](self) for the syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkMix {
    entries: Vec<Entry>,
    total: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    weight: f64,
    kind: u8,
    low: u32,
    high: u32,
}

/// A work mix that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadWorkMix(String);

impl fmt::Display for BadWorkMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad work mix: {} (expected entries like none, cpu:20us-50us, block:1ms, \
             99%cpu:10us,1%block:10ms, file:4KiB-64KiB)",
            self.0
        )
    }
}

impl std::error::Error for BadWorkMix {}

fn bad(why: impl Into<String>) -> BadWorkMix {
    BadWorkMix(why.into())
}

/// Parses an entry's amount.
type Parse = fn(&str) -> Result<u32, BadWorkMix>;

/// `20us`, `1ms`, `0.5s` as microseconds.
fn parse_micros(s: &str) -> Result<u32, BadWorkMix> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return Err(bad(format!("{s:?} needs a unit (us, ms or s)")));
    };
    let v: f64 = num
        .parse()
        .map_err(|_| bad(format!("{s:?} is not a duration")))?;
    let us = v * scale;
    if !(0.0..=f64::from(MAX_AMOUNT)).contains(&us) {
        return Err(bad(format!("{s:?} is out of range (0 to 10 s)")));
    }
    Ok(us.round() as u32)
}

/// `4KiB`, `64KiB`, `4096` as bytes.
fn parse_bytes(s: &str) -> Result<u32, BadWorkMix> {
    let (num, scale) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1024.0)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1024.0 * 1024.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| bad(format!("{s:?} is not a size")))?;
    let b = v * scale;
    if !(1.0..=f64::from(MAX_AMOUNT)).contains(&b) {
        return Err(bad(format!("{s:?} is out of range (1 B to 10 MB)")));
    }
    Ok(b.round() as u32)
}

impl FromStr for WorkMix {
    type Err = BadWorkMix;

    fn from_str(s: &str) -> Result<Self, BadWorkMix> {
        let mut entries = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (weight, rest) = match part.split_once('%') {
                Some((w, rest)) => {
                    let w: f64 = w
                        .parse()
                        .map_err(|_| bad(format!("{w:?} is not a percentage")))?;
                    if !(w > 0.0 && w <= 100.0) {
                        return Err(bad(format!("{w}% is not in (0, 100]")));
                    }
                    (w, rest)
                }
                None => (100.0, part),
            };
            let (kind, range) = match rest.split_once(':') {
                Some((k, r)) => (k, Some(r)),
                None => (rest, None),
            };
            let (kind, parse): (u8, Parse) = match kind {
                "none" => (0, parse_micros),
                "cpu" => (1, parse_micros),
                "block" => (2, parse_micros),
                "file" => (3, parse_bytes),
                other => return Err(bad(format!("unknown kind {other:?}"))),
            };
            let (low, high) = match (kind, range) {
                (0, None) => (0, 0),
                (0, Some(_)) => return Err(bad("none takes no amount")),
                (_, None) => return Err(bad(format!("{rest:?} needs an amount"))),
                (_, Some(r)) => match r.split_once('-') {
                    Some((l, h)) => (parse(l)?, parse(h)?),
                    None => {
                        let v = parse(r)?;
                        (v, v)
                    }
                },
            };
            if low > high {
                return Err(bad(format!(
                    "{r:?}: low above high",
                    r = range.unwrap_or("")
                )));
            }
            entries.push(Entry {
                weight,
                kind,
                low,
                high,
            });
        }
        let total = entries.iter().map(|e| e.weight).sum();
        Ok(WorkMix { entries, total })
    }
}

impl WorkMix {
    /// No work: every request is answered at once.
    pub fn none() -> Self {
        "none".parse().unwrap_or(WorkMix {
            entries: Vec::new(),
            total: 0.0,
        })
    }

    /// Whether some request may read the service's file.
    pub fn reads_files(&self) -> bool {
        self.entries.iter().any(|e| e.kind == 3)
    }

    /// Draws one request's work, advancing the xorshift state `rng` (any non-zero start).
    pub fn draw(&self, rng: &mut u64) -> Work {
        let mut next = || {
            let mut x = (*rng).max(1);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *rng = x;
            x
        };
        let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        let mut pick = unit(next()) * self.total;
        let Some(mut e) = self.entries.first() else {
            return Work::None;
        };
        for entry in &self.entries {
            e = entry;
            if pick < entry.weight {
                break;
            }
            pick -= entry.weight;
        }
        let span = u64::from(e.high - e.low) + 1;
        let amount = e.low + (next() % span) as u32;
        match e.kind {
            1 => Work::Compute(Duration::from_micros(amount.into())),
            2 => Work::Block(Duration::from_micros(amount.into())),
            3 => Work::ReadFile(amount),
            _ => Work::None,
        }
    }
}

impl fmt::Display for WorkMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if self.entries.len() > 1 {
                write!(f, "{}%", e.weight)?;
            }
            let name = ["none", "cpu", "block", "file"][usize::from(e.kind.min(3))];
            f.write_str(name)?;
            let unit = if e.kind == 3 { "B" } else { "us" };
            match (e.kind, e.low == e.high) {
                (0, _) => {}
                (_, true) => write!(f, ":{}{unit}", e.low)?,
                (_, false) => write!(f, ":{}{unit}-{}{unit}", e.low, e.high)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_draw_in_proportion_and_bad_ones_say_why() {
        let mix: WorkMix = "99%cpu:10us,1%block:10ms".parse().unwrap();
        let mut rng = 1;
        let (mut cpu, mut block) = (0, 0);
        for _ in 0..100_000 {
            match mix.draw(&mut rng) {
                Work::Compute(d) => {
                    assert_eq!(d, Duration::from_micros(10));
                    cpu += 1
                }
                Work::Block(d) => {
                    assert_eq!(d, Duration::from_millis(10));
                    block += 1
                }
                other => panic!("{other:?}"),
            }
        }
        assert!((700..1300).contains(&block), "1% of 100,000: {block}");
        assert_eq!(cpu + block, 100_000);
        let range: WorkMix = "cpu:20us-50us".parse().unwrap();
        for _ in 0..1000 {
            let Work::Compute(d) = range.draw(&mut rng) else {
                panic!()
            };
            assert!((20..=50).contains(&d.as_micros()), "{d:?}");
        }
        assert_eq!(range.to_string(), "cpu:20us-50us");
        assert_eq!(
            "file:4KiB-64KiB".parse::<WorkMix>().unwrap().to_string(),
            "file:4096B-65536B"
        );
        assert!("none".parse::<WorkMix>().unwrap().draw(&mut rng) == Work::None);
        for (input, why) in [
            ("gpu:1ms", "unknown kind"),
            ("cpu", "needs an amount"),
            ("cpu:10", "needs a unit"),
            ("cpu:x ms", "not a duration"),
            ("cpu:50us-20us", "low above high"),
            ("0%cpu:1us", "not in (0, 100]"),
            ("abc%cpu:1us", "not a percentage"),
            ("block:20s", "out of range"),
            ("none:1ms", "no amount"),
        ] {
            let err = input.parse::<WorkMix>().unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn requests_frame_by_header_and_bad_headers_are_refused() {
        let s = WorkService::new();
        let mut req = Vec::new();
        Work::Block(Duration::from_micros(1)).encode(40, 3, &mut req);
        assert_eq!(req.len(), 40);
        assert_eq!(
            &req[..HEADER],
            &Work::Block(Duration::from_micros(1)).header(40, 3)
        );
        assert_eq!(s.frame(&req[..1]).unwrap(), None);
        assert_eq!(s.frame(&req[..39]).unwrap(), None);
        assert_eq!(s.frame(&req).unwrap(), Some(40));
        let mut out = Vec::new();
        s.call(&req, &mut out);
        assert_eq!(out, req);
        assert!(s.frame(b"XX").is_err());
        let mut short = req.clone();
        short[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert!(s.frame(&short).is_err());
        let mut kind = req.clone();
        kind[2] = 9;
        assert!(s.frame(&kind).is_err());
    }

    #[test]
    fn file_reads_read_within_the_file() {
        let path = std::env::temp_dir().join(format!("posa-work-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 128 * 1024]).unwrap();
        let s = WorkService::with_file(&path).unwrap();
        let mut req = Vec::new();
        Work::ReadFile(64 * 1024).encode(16, u32::MAX, &mut req);
        let mut out = Vec::new();
        s.call(&req, &mut out);
        assert_eq!(out, req);
        std::fs::write(&path, b"small").unwrap();
        assert!(WorkService::with_file(&path).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
