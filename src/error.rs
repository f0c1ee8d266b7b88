//! The error family: one file, as crossbeam-channel's `err.rs` serves every channel flavour.
//!
//! Three shapes cover every failure in posa:
//!
//! - [`Refused<T>`]: something was handed to posa and not taken: a put into a
//!   [`BoundedQueue`](crate::monitor::BoundedQueue), a post to a reactor's mailbox, a call on an
//!   active object's proxy, a submit to a thread pool, an operation on a proactor connection.
//!   The item *always* comes back ([`Refused::into_inner`]), with the reason as the variant.
//!   `Debug` never prints the item (a job is a closure; a proactor write is a whole buffer).
//! - [`RunError`]: a job or method request that was taken produced no value: it panicked, it
//!   waited past its deadline, or an interceptor refused to run it.
//! - [`Rejection`] (with its [`Reason`]): an interceptor refused a dispatch. It travels inside
//!   the two above, and inside `ConnectError::Rejected`.
//!
//! Errors of the operating system stay [`std::io::Error`] and are carried through unchanged.
//!
//! ```
//! use posa::monitor::BoundedQueue;
//! use posa::Refused;
//!
//! let q = BoundedQueue::new(1);
//! q.try_put("first").unwrap();
//! match q.try_put("second") {
//!     Err(Refused::Full(item)) => assert_eq!(item, "second"), // it came back
//!     other => panic!("{other:?}"),
//! }
//! q.close();
//! let e = q.try_put("third").unwrap_err();
//! assert_eq!(e.to_string(), "refused: closed, takes nothing more");
//! assert_eq!(format!("{e:?}"), "Closed(..)");
//! assert_eq!(e.into_inner(), "third");
//! ```

use std::fmt;

/// Something handed to posa was not taken; it comes back inside. See the [module docs](self).
#[derive(PartialEq, Eq)]
pub enum Refused<T> {
    /// No room: the queue, mailbox, activation list or write queue is at its bound. Try later,
    /// wait for room (a blocking call, or a proactor connection's `writable`), or shed load.
    Full(T),
    /// No room came before the deadline of a timed call.
    Timeout(T),
    /// The receiver has shut down, or is shutting down, and takes nothing more.
    Closed(T),
    /// An interceptor refused it at admission (a rate limit, a bulkhead, an open circuit).
    Rejected(T, Rejection),
}

impl<T> Refused<T> {
    /// The item that was not taken.
    pub fn into_inner(self) -> T {
        match self {
            Refused::Full(t)
            | Refused::Timeout(t)
            | Refused::Closed(t)
            | Refused::Rejected(t, _) => t,
        }
    }

    /// The item, borrowed.
    pub fn item(&self) -> &T {
        match self {
            Refused::Full(t)
            | Refused::Timeout(t)
            | Refused::Closed(t)
            | Refused::Rejected(t, _) => t,
        }
    }

    /// The same refusal with its item mapped (to wrap or unwrap what came back).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Refused<U> {
        match self {
            Refused::Full(t) => Refused::Full(f(t)),
            Refused::Timeout(t) => Refused::Timeout(f(t)),
            Refused::Closed(t) => Refused::Closed(f(t)),
            Refused::Rejected(t, r) => Refused::Rejected(f(t), r),
        }
    }

    /// `true` for [`Refused::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, Refused::Full(_))
    }

    /// `true` for [`Refused::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, Refused::Closed(_))
    }
}

impl<T> fmt::Debug for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Full(_) => f.write_str("Full(..)"),
            Refused::Timeout(_) => f.write_str("Timeout(..)"),
            Refused::Closed(_) => f.write_str("Closed(..)"),
            Refused::Rejected(_, r) => write!(f, "Rejected(.., {r:?})"),
        }
    }
}

impl<T> fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Full(_) => f.write_str("refused: full"),
            Refused::Timeout(_) => f.write_str("refused: timed out waiting for room"),
            Refused::Closed(_) => f.write_str("refused: closed, takes nothing more"),
            Refused::Rejected(_, r) => write!(f, "refused: {r}"),
        }
    }
}

impl<T> std::error::Error for Refused<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refused::Rejected(_, r) => Some(r),
            _ => None,
        }
    }
}

/// Why a job or method request that was taken produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// It panicked; the payload's message. The worker or servant survives.
    Panicked(String),
    /// It waited past its deadline and was not run
    /// ([`Deadline`](crate::intercept::Deadline)).
    DeadlineExceeded,
    /// An interceptor refused to run it.
    Rejected(Rejection),
}

impl RunError {
    /// The error for a run that an interceptor refused: a deadline has its own variant.
    pub(crate) fn from_rejection(r: Rejection) -> Self {
        if r.reason == Reason::DeadlineExceeded {
            RunError::DeadlineExceeded
        } else {
            RunError::Rejected(r)
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Panicked(msg) => write!(f, "panicked: {msg}"),
            RunError::DeadlineExceeded => f.write_str("not run: deadline exceeded"),
            RunError::Rejected(r) => write!(f, "not run: {r}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

/// Why an interceptor refused a dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Over the rate limit.
    RateLimited,
    /// Too much in flight (bulkhead).
    Overloaded,
    /// The circuit breaker is open.
    CircuitOpen,
    /// It waited past its deadline.
    DeadlineExceeded,
    /// Anything else, in words.
    Other(String),
}

/// A refused dispatch: which interceptor, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The interceptor's name.
    pub by: &'static str,
    /// Why.
    pub reason: Reason,
}

impl Rejection {
    /// A rejection by `by` for `reason`.
    pub fn new(by: &'static str, reason: Reason) -> Self {
        Self { by, reason }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::RateLimited => write!(f, "rejected by {}: rate limited", self.by),
            Reason::Overloaded => write!(f, "rejected by {}: too much in flight", self.by),
            Reason::CircuitOpen => write!(f, "rejected by {}: circuit open", self.by),
            Reason::DeadlineExceeded => write!(f, "rejected by {}: deadline exceeded", self.by),
            Reason::Other(why) => write!(f, "rejected by {}: {why}", self.by),
        }
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_hands_the_item_back_and_never_prints_it() {
        let r = Refused::Rejected(
            vec![0u8; 1 << 20],
            Rejection::new("rate", Reason::RateLimited),
        );
        let dbg = format!("{r:?}");
        assert!(dbg.len() < 100, "{dbg}");
        assert_eq!(r.to_string(), "refused: rejected by rate: rate limited");
        assert!(std::error::Error::source(&r).is_some());
        assert_eq!(r.map(|v| v.len()).into_inner(), 1 << 20);
        assert!(Refused::Full(1).is_full() && Refused::Closed(1).is_closed());
        assert_eq!(*Refused::Timeout(3).item(), 3);
    }

    #[test]
    fn a_deadline_rejection_becomes_its_own_run_error() {
        let deadline = Rejection::new("deadline", Reason::DeadlineExceeded);
        assert_eq!(
            RunError::from_rejection(deadline),
            RunError::DeadlineExceeded
        );
        let other = Rejection::new("breaker", Reason::CircuitOpen);
        assert_eq!(
            RunError::from_rejection(other.clone()),
            RunError::Rejected(other)
        );
        assert_eq!(RunError::Panicked("x".into()).to_string(), "panicked: x");
    }
}
