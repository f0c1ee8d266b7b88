//! One service, every architecture: the [`Service`] trait a protocol implements once, and the
//! request framing every model's driver shares ([`Requests`]).
//!
//! A service sees bytes in and replies out; posa owns everything else: the sockets, the read
//! and write buffers, the water marks, half-close, the idle timeout, drain and lingering close.
//! The model decides where [`Service::call`] runs:
//!
//! | model | where `call` runs |
//! |---|---|
//! | reactor, reactor-pool, leader-followers | in the event handler, on the loop thread (blocking work blocks the loop) |
//! | half-sync | on the pool's workers (the loop only frames) |
//! | proactor | in the completion handler (the loop, or the pool of [`CompleteOn::Pool`](crate::proactor::CompleteOn)) |
//! | thread-per-connection | in the connection's own thread |
//!
//! # Contract
//! - [`Service::frame`] is called on the I/O thread with the bytes received and not yet
//!   consumed; it must be cheap (look at a header or search for a delimiter). It answers how
//!   long the first request is, that more bytes are needed, or that the input is malformed
//!   (the connection then closes lingering: what was already answered still goes out).
//! - [`Service::call`] gets one whole request and appends its reply. The requests of one
//!   connection are called in order and their replies go out in that order, on every model.
//! - A partial request is buffered up to [`Service::max_request`] bytes; longer is a protocol
//!   error (a peer cannot make the server buffer without limit).
//!
//! ```
//! use posa::net::{ProtocolError, Requests, Service};
//!
//! /// Upper-cases each line.
//! struct Shout;
//!
//! impl Service for Shout {
//!     fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
//!         Ok(input.iter().position(|b| *b == b'\n').map(|i| i + 1))
//!     }
//!     fn call(&self, request: &[u8], reply: &mut Vec<u8>) {
//!         reply.extend(request.iter().map(u8::to_ascii_uppercase));
//!     }
//! }
//!
//! let mut requests = Requests::new();
//! let mut out = Vec::new();
//! requests.feed(&Shout, b"hello\nwor", |r| Shout.call(r, &mut out))?;
//! requests.feed(&Shout, b"ld\n", |r| Shout.call(r, &mut out))?;
//! assert_eq!(out, b"HELLO\nWORLD\n");
//! assert_eq!(requests.buffered(), 0);
//! # Ok::<(), ProtocolError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use super::Peer;

/// A protocol served over a byte stream: framing and work; posa owns the rest (sockets,
/// buffers, water marks, half-close, idle timeout, drain, lingering close), and
/// [`Server::serve`](crate::server::Server::serve) runs it on any model.
///
/// `frame` runs on the I/O thread and must be cheap; `call` gets one whole request and may
/// compute or block, wherever the model runs it (on the loop for the reactor models, on the
/// pool for half-sync, in the completion handler for the proactor). A connection's requests
/// are called in order and their replies go out in that order; malformed input closes the
/// connection lingering after the replies to the requests before it. The repository's
/// `docs/service.md` has the whole picture, with an example on three models.
pub trait Service: Send + Sync + 'static {
    /// The length of the first request in `input` (non-empty): `Ok(Some(n))` with
    /// `1 <= n <= input.len()`, `Ok(None)` if more bytes are needed, or an error for malformed
    /// input (the connection closes). Runs on the I/O thread: keep it cheap.
    fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError>;

    /// Does one request's work and appends its reply to `reply` (nothing, for no reply). May
    /// compute or block; where it runs is the model's choice.
    fn call(&self, request: &[u8], reply: &mut Vec<u8>);

    /// The longest request the service accepts; a partial request longer than this closes the
    /// connection. Default 64 KiB.
    fn max_request(&self) -> usize {
        64 * 1024
    }

    /// A connection was accepted and will be served.
    fn opened(&self, peer: &Peer) {
        let _ = peer;
    }

    /// A connection closed (every model calls this once per [`opened`](Self::opened)).
    fn closed(&self, peer: &Peer) {
        let _ = peer;
    }
}

/// A shared service (`Arc<dyn Service>`, chosen at run time) is a service.
#[allow(
    clippy::disallowed_types,
    reason = "users' std Arc around a service, not state shared by posa's threads"
)]
impl<S: Service + ?Sized> Service for std::sync::Arc<S> {
    fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        (**self).frame(input)
    }
    fn call(&self, request: &[u8], reply: &mut Vec<u8>) {
        (**self).call(request, reply)
    }
    fn max_request(&self) -> usize {
        (**self).max_request()
    }
    fn opened(&self, peer: &Peer) {
        (**self).opened(peer)
    }
    fn closed(&self, peer: &Peer) {
        (**self).closed(peer)
    }
}

/// Malformed input: the connection that sent it is closed (lingering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(Cow<'static, str>);

impl ProtocolError {
    /// An error saying `why`.
    pub fn new(why: impl Into<Cow<'static, str>>) -> Self {
        Self(why.into())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

impl From<ProtocolError> for std::io::Error {
    fn from(e: ProtocolError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// The request framing of one connection: bytes as they arrive in, whole requests out, a
/// partial request kept (bounded by [`Service::max_request`]). Every model's driver uses it;
/// it is public for users who write a loop of their own.
#[derive(Debug, Default)]
pub struct Requests {
    partial: Vec<u8>,
}

impl Requests {
    /// No bytes buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of a partial request held now.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Feeds `data` (just received): calls `each` with every complete request, in order, and
    /// keeps the rest. A request split over several reads is delivered whole once complete.
    /// When `data` completes no partial request, it is framed where it lies (no copy).
    pub fn feed<S: Service + ?Sized>(
        &mut self,
        service: &S,
        data: &[u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ProtocolError> {
        if self.partial.is_empty() {
            let used = split(service, data, &mut each)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            self.partial.extend_from_slice(data);
            let used = split(service, &self.partial, &mut each)?;
            self.partial.drain(..used);
        }
        if self.partial.len() > service.max_request() {
            return Err(ProtocolError::new(format!(
                "a request longer than {} bytes",
                service.max_request()
            )));
        }
        if self.partial.is_empty() && self.partial.capacity() > 4096 {
            self.partial = Vec::new(); // an idle connection holds no buffer
        }
        Ok(())
    }
}

/// Calls `each` with every whole request at the front of `data`; returns the bytes used.
fn split<S: Service + ?Sized>(
    service: &S,
    data: &[u8],
    each: &mut impl FnMut(&[u8]),
) -> Result<usize, ProtocolError> {
    let mut used = 0;
    while used < data.len() {
        let rest = &data[used..];
        match service.frame(rest)? {
            None => break,
            Some(n) if n >= 1 && n <= rest.len() => {
                each(&rest[..n]);
                used += n;
            }
            Some(n) => {
                return Err(ProtocolError::new(format!(
                    "the service framed {n} bytes of {} available",
                    rest.len()
                )));
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests of a 1-byte length header.
    struct Len;
    impl Service for Len {
        fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
            let n = 1 + input[0] as usize;
            if input[0] == 0 {
                return Err(ProtocolError::new("empty request"));
            }
            Ok((input.len() >= n).then_some(n))
        }
        fn call(&self, request: &[u8], reply: &mut Vec<u8>) {
            reply.extend_from_slice(&request[1..]);
        }
        fn max_request(&self) -> usize {
            8
        }
    }

    struct Liar;
    impl Service for Liar {
        fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
            Ok(Some(input.len() + 1))
        }
        fn call(&self, _: &[u8], _: &mut Vec<u8>) {}
    }

    fn all(requests: &mut Requests, s: &impl Service, data: &[u8]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        requests.feed(s, data, |r| got.push(r.to_vec())).unwrap();
        got
    }

    #[test]
    fn requests_split_over_reads_arrive_whole_and_in_order() {
        let mut r = Requests::new();
        assert_eq!(
            all(&mut r, &Len, &[2, b'a', b'b', 1]),
            vec![vec![2, b'a', b'b']]
        );
        assert_eq!(r.buffered(), 1);
        assert_eq!(all(&mut r, &Len, &[]), Vec::<Vec<u8>>::new());
        assert_eq!(
            all(&mut r, &Len, &[b'c', 1, b'd', 3]),
            vec![vec![1, b'c'], vec![1, b'd']]
        );
        assert_eq!(r.buffered(), 1);
        assert_eq!(all(&mut r, &Len, b"xyz"), vec![vec![3, b'x', b'y', b'z']]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn malformed_oversized_and_overlong_frames_are_errors() {
        let mut r = Requests::new();
        assert!(r.feed(&Len, &[0], |_| {}).is_err());
        let mut r = Requests::new();
        // A declared length of 20 > max_request 8: refused once more than 8 bytes wait.
        assert!(r.feed(&Len, &[20, 1, 2, 3], |_| {}).is_ok());
        let err = r.feed(&Len, &[4, 5, 6, 7, 8, 9], |_| {}).unwrap_err();
        assert!(err.to_string().contains("longer than 8"), "{err}");
        let err = Requests::new().feed(&Liar, b"ab", |_| {}).unwrap_err();
        assert!(err.to_string().contains("framed 3 bytes of 2"), "{err}");
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    }
}
