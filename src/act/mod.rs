//! Asynchronous Completion Token: a one-shot result channel that every posa layer returns.
//!
//! An operation that finishes later (a pool job, an active-object method request, a connect, a
//! proactor read) hands its caller a [`Token`] and keeps the matching [`Completer`]. The
//! completer states the operation's [`Outcome`] exactly once; the token receives it by
//! blocking ([`Token::wait`], [`Token::wait_timeout`]), by polling ([`Token::try_take`],
//! [`Token::is_ready`]), by `.await` (it is a [`Future`]), or by a callback
//! ([`Token::on_complete`]). Many tokens can be awaited as a set ([`TokenSet`], ACE's
//! `Future_Set`) or all at once ([`wait_all`]).
//!
//! # Outcomes, stated once
//!
//! Cancellation is a *request*: [`Token::cancel`] (or dropping a token made to cancel on drop)
//! sets a flag the producer can read ([`Completer::is_cancelled`]) or be called back on
//! ([`Completer::on_cancel`]). The producer then states what really happened:
//!
//! | producer calls | token sees |
//! |---|---|
//! | [`Completer::complete`] with no cancel requested | [`Outcome::Completed`] |
//! | [`Completer::complete`] after a cancel request | [`Outcome::CancelledAfterEffect`]: too late, the effect happened, here is its result |
//! | [`Completer::cancel`] | [`Outcome::Cancelled`] with the residue `R` (a job, a buffer): the operation never took effect |
//! | drops the completer | [`Outcome::Abandoned`]: never a hang |
//!
//! Whatever was handed to the operation travels back in `T`, `E` or `R`, so a buffer is never
//! lost to a cancellation: that is why the token has a third type parameter.
//!
//! # What dropping a token does
//!
//! It depends on what the operation is, and each producer says which it made:
//!
//! | producer | a dropped token | made by |
//! |---|---|---|
//! | pool jobs ([`ThreadPool::submit`](crate::pool::ThreadPool::submit), `spawn_future`), active-object calls | **detaches**: the work runs, its result is dropped (as a dropped `std::thread::JoinHandle`, a tokio `JoinHandle`, or `rayon::spawn`) | [`detaching_pair`] |
//! | proactor operations and timers, connects, reactor posts | **cancels**: an I/O operation nobody waits for is withdrawn (as dropping a Rust future) | [`pair`], [`pair_with_residue`] |
//!
//! Either way [`Token::cancel`] cancels explicitly, [`Token::detach`] detaches explicitly, and
//! [`Token::cancel_on_drop`] turns a detaching token into a cancelling one (a scope guard for a
//! pool job). A `let _ = pool.submit(job)` therefore runs `job`: the pattern a user writes
//! for fire-and-forget does what it says (better still: [`ThreadPool::execute`], which
//! makes no token at all).
//!
//! [`ThreadPool::execute`]: crate::pool::ThreadPool::execute
//!
//! # Algorithm and invariants
//!
//! One `Arc<Shared>` per pair (one allocation). `Shared` holds a [`sync::Mutex`] over the slot
//! (the outcome once stated, and the single listener: a blocked thread, a waker or a callback)
//! and an atomic cancel flag the producer reads without locking.
//! - The outcome is written at most once: `Completer` methods take `self`, and its `Drop` states
//!   `Abandoned` only if nothing was stated.
//! - The outcome is read at most once: every consuming path takes it out of the slot under the
//!   lock, and a token that delivered it no longer holds the `Arc`.
//! - A callback registered before completion is run by the completer, after the lock is
//!   released; one registered after completion runs inline. Either way exactly once.
//! - The cancel hook runs at most once and never after the outcome is stated. It runs exactly
//!   once when the hook is installed before the outcome is stated and the request reaches the
//!   slot first: the flag is set before the hook is looked up (under the lock), and a hook is
//!   installed only while the flag is still clear (under the lock), else run inline. When the
//!   request races with the statement, the hook may be skipped: the producer is done and needs
//!   no notice (loom found that window; `loom-tests/tests/act.rs` pins it down).
//!
//! ```
//! use posa::act::{self, Outcome};
//!
//! let (completer, token) = act::pair::<u32, String>();
//! std::thread::spawn(move || completer.complete(Ok(42)));
//! assert_eq!(token.wait().into_result().unwrap(), 42);
//!
//! // Cancellation is a request; the producer says what happened and hands the residue back.
//! let (completer, token) = act::pair_with_residue::<usize, String, Vec<u8>>();
//! token.cancel();
//! assert!(completer.is_cancelled());
//! completer.cancel(vec![0u8; 4096]); // the buffer goes back to the caller
//! match token.wait() {
//!     Outcome::Cancelled(buf) => assert_eq!(buf.len(), 4096),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
//!
//! [`sync::Mutex`]: crate::sync::Mutex

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Condvar, Mutex};

mod set;

pub use set::{Completion, TokenSet, wait_all};

/// What happened to an operation, stated exactly once by its [`Completer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T, E, R = ()> {
    /// The operation ran and no cancellation was requested before it finished.
    Completed(Result<T, E>),
    /// The operation never took effect; whatever was handed to it comes back as `R`.
    Cancelled(R),
    /// Cancellation was requested, but the operation had already taken effect: the result is
    /// real (bytes were written, the job ran), and here it is.
    CancelledAfterEffect(Result<T, E>),
    /// The producer went away without stating an outcome (it was dropped or panicked).
    Abandoned,
}

impl<T, E, R> Outcome<T, E, R> {
    /// `true` for [`Outcome::Completed`].
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Completed(_))
    }

    /// `true` for [`Outcome::Cancelled`] and [`Outcome::CancelledAfterEffect`].
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            Outcome::Cancelled(_) | Outcome::CancelledAfterEffect(_)
        )
    }

    /// Flattens into a `Result`. An effect that happened despite a cancel request still yields
    /// its result (the effect is real); the other non-completions become an [`Error`].
    pub fn into_result(self) -> Result<T, Error<E, R>> {
        match self {
            Outcome::Completed(r) | Outcome::CancelledAfterEffect(r) => r.map_err(Error::Failed),
            Outcome::Cancelled(residue) => Err(Error::Cancelled(residue)),
            Outcome::Abandoned => Err(Error::Abandoned),
        }
    }

    /// Maps the success value, keeping the kind of outcome.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U, E, R> {
        match self {
            Outcome::Completed(r) => Outcome::Completed(r.map(f)),
            Outcome::CancelledAfterEffect(r) => Outcome::CancelledAfterEffect(r.map(f)),
            Outcome::Cancelled(residue) => Outcome::Cancelled(residue),
            Outcome::Abandoned => Outcome::Abandoned,
        }
    }
}

/// Why a token did not yield a value (see [`Outcome::into_result`]). `Debug` and
/// [`std::error::Error`] hold for any residue `R` (it is never printed), so `?` works on every
/// token's result.
#[derive(Clone, PartialEq, Eq)]
pub enum Error<E, R = ()> {
    /// The operation ran and failed with `E`.
    Failed(E),
    /// The operation was cancelled before it took effect; `R` is what it was handed.
    Cancelled(R),
    /// The producer was dropped without stating an outcome.
    Abandoned,
}

impl<E: fmt::Display, R> fmt::Display for Error<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(e) => write!(f, "operation failed: {e}"),
            Error::Cancelled(_) => f.write_str("operation cancelled before it took effect"),
            Error::Abandoned => f.write_str("operation abandoned: its producer was dropped"),
        }
    }
}

impl<E: fmt::Debug, R> fmt::Debug for Error<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Error::Cancelled(_) => f.write_str("Cancelled(..)"),
            Error::Abandoned => f.write_str("Abandoned"),
        }
    }
}

impl<E: std::error::Error + 'static, R> std::error::Error for Error<E, R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// A timed wait ran out; the token is handed back unharmed.
pub struct TimedOut<Tok>(pub Tok);

impl<Tok> TimedOut<Tok> {
    /// The token, to wait again or drop (which requests cancellation).
    pub fn into_token(self) -> Tok {
        self.0
    }
}

impl<Tok> fmt::Debug for TimedOut<Tok> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TimedOut(..)")
    }
}

impl<Tok> fmt::Display for TimedOut<Tok> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting for a completion token")
    }
}

impl<Tok> std::error::Error for TimedOut<Tok> {}

type Callback<T, E, R> = Box<dyn FnOnce(Outcome<T, E, R>) + Send>;
type CancelHook = Box<dyn FnOnce() + Send>;

enum Listener<T, E, R> {
    None,
    Thread,
    Waker(Waker),
    Callback(Callback<T, E, R>),
}

struct Slot<T, E, R> {
    outcome: Option<Outcome<T, E, R>>,
    listener: Listener<T, E, R>,
    cancel_hook: Option<CancelHook>,
}

struct Shared<T, E, R> {
    slot: Mutex<Slot<T, E, R>>,
    cv: Condvar,
    cancel_requested: AtomicBool,
    /// Set (under the lock) once the outcome is stated; read without it to spin or poll.
    stated: AtomicBool,
}

impl<T, E, R> Shared<T, E, R> {
    fn request_cancel(&self) {
        if self.cancel_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        let hook = self.slot.lock().cancel_hook.take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// Creates a completer/token pair whose cancellation hands back nothing (`R = ()`). Dropping
/// the token requests cancellation.
pub fn pair<T, E>() -> (Completer<T, E>, Token<T, E>) {
    pair_with_residue()
}

/// Like [`pair`], but dropping the token detaches it instead: the operation runs on and its
/// outcome is dropped when stated. For work that is worth finishing when nobody waits (pool
/// jobs, active-object calls); [`Token::cancel`] still cancels.
///
/// ```
/// let (completer, token) = posa::act::detaching_pair::<u8, ()>();
/// drop(token);
/// assert!(!completer.is_cancelled(), "a dropped detaching token does not cancel");
/// let (completer, token) = posa::act::detaching_pair::<u8, ()>();
/// token.cancel_on_drop(); // dropped at once, as a guard going out of scope
/// assert!(completer.is_cancelled());
/// ```
pub fn detaching_pair<T, E>() -> (Completer<T, E>, Token<T, E>) {
    let (completer, mut token) = pair_with_residue();
    token.detach_on_drop = true;
    (completer, token)
}

/// Creates a completer/token pair whose cancellation hands back a residue `R`.
pub fn pair_with_residue<T, E, R>() -> (Completer<T, E, R>, Token<T, E, R>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            outcome: None,
            listener: Listener::None,
            cancel_hook: None,
        }),
        cv: Condvar::new(),
        cancel_requested: AtomicBool::new(false),
        stated: AtomicBool::new(false),
    });
    (
        Completer {
            shared: Some(Arc::clone(&shared)),
        },
        Token {
            shared: Some(shared),
            detach_on_drop: false,
        },
    )
}

/// The producer's side of a pair: states the outcome exactly once.
pub struct Completer<T, E, R = ()> {
    shared: Option<Arc<Shared<T, E, R>>>,
}

impl<T, E, R> Completer<T, E, R> {
    /// States the result of an operation that took effect. If cancellation was requested
    /// meanwhile, the token sees [`Outcome::CancelledAfterEffect`].
    pub fn complete(mut self, result: Result<T, E>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let outcome = if shared.cancel_requested.load(Ordering::Acquire) {
            Outcome::CancelledAfterEffect(result)
        } else {
            Outcome::Completed(result)
        };
        state(&shared, outcome);
    }

    /// States that the operation never took effect, handing back what it was given.
    pub fn cancel(mut self, residue: R) {
        if let Some(shared) = self.shared.take() {
            state(&shared, Outcome::Cancelled(residue));
        }
    }

    /// `true` once the token asked for cancellation or was dropped.
    pub fn is_cancelled(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.cancel_requested.load(Ordering::Acquire))
    }

    /// Runs `hook` once when cancellation is requested, on the requesting thread (the one that
    /// calls [`Token::cancel`] or drops the token): now, inline, if it already was. A later
    /// call replaces an earlier hook that has not run. The hook is dropped unrun once the
    /// outcome is stated, also when a cancel request races with that statement (the producer
    /// has finished and has nothing left to abort).
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) {
        let Some(shared) = self.shared.as_ref() else {
            return;
        };
        let mut slot = shared.slot.lock();
        if shared.cancel_requested.load(Ordering::Acquire) {
            drop(slot);
            hook();
        } else {
            slot.cancel_hook = Some(Box::new(hook));
        }
    }
}

impl<T, E, R> Drop for Completer<T, E, R> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            state(&shared, Outcome::Abandoned);
        }
    }
}

impl<T, E, R> fmt::Debug for Completer<T, E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

fn state<T, E, R>(shared: &Shared<T, E, R>, outcome: Outcome<T, E, R>) {
    let mut slot = shared.slot.lock();
    slot.cancel_hook = None;
    shared.stated.store(true, Ordering::Release);
    match std::mem::replace(&mut slot.listener, Listener::None) {
        Listener::Callback(callback) => {
            drop(slot);
            callback(outcome);
        }
        Listener::Waker(waker) => {
            slot.outcome = Some(outcome);
            drop(slot);
            waker.wake();
        }
        Listener::Thread => {
            slot.outcome = Some(outcome);
            drop(slot);
            shared.cv.notify_one();
        }
        Listener::None => slot.outcome = Some(outcome),
    }
}

/// The consumer's side of a pair: wait, poll, await, call back, or cancel.
///
/// Dropping a token that has not delivered its outcome requests cancellation, or detaches,
/// as its producer chose (see [the module docs](self#what-dropping-a-token-does)). The
/// consuming methods take `self`, so a token delivers its outcome once; polling it again after
/// it returned `Poll::Ready` panics, as finished futures conventionally do.
#[must_use = "a token is the only way to learn the outcome; dropping it cancels an I/O operation (pool jobs and active-object calls run on)"]
pub struct Token<T, E, R = ()> {
    shared: Option<Arc<Shared<T, E, R>>>,
    /// Dropping detaches instead of requesting cancellation.
    detach_on_drop: bool,
}

impl<T, E, R> Token<T, E, R> {
    /// A token that is already complete with `result`.
    pub fn ready(result: Result<T, E>) -> Self {
        let (completer, token) = pair_with_residue();
        completer.complete(result);
        token
    }

    fn shared(&self) -> &Arc<Shared<T, E, R>> {
        self.shared
            .as_ref()
            .expect("posa::act::Token used after it delivered its outcome")
    }

    /// Blocks until the outcome is stated.
    pub fn wait(mut self) -> Outcome<T, E, R> {
        match self.wait_inner(None) {
            Some(outcome) => outcome,
            None => unreachable!("an untimed wait returns only with an outcome"),
        }
    }

    /// Blocks for at most `timeout`; on time-out the token comes back in the error.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Outcome<T, E, R>, TimedOut<Self>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            None => Ok(self.wait()),
        }
    }

    /// Blocks until `deadline` at most; on time-out the token comes back in the error.
    pub fn wait_deadline(mut self, deadline: Instant) -> Result<Outcome<T, E, R>, TimedOut<Self>> {
        match self.wait_inner(Some(deadline)) {
            Some(outcome) => Ok(outcome),
            None => Err(TimedOut(self)),
        }
    }

    fn wait_inner(&mut self, deadline: Option<Instant>) -> Option<Outcome<T, E, R>> {
        let shared = self.shared();
        // A completion that is microseconds away costs no sleep and no wake-up.
        crate::sync::spin_until(|| shared.stated.load(Ordering::Acquire));
        let mut slot = shared.slot.lock();
        let outcome = loop {
            if let Some(outcome) = slot.outcome.take() {
                break Some(outcome);
            }
            slot.listener = Listener::Thread;
            match deadline {
                None => shared.cv.wait(&mut slot),
                Some(deadline) => {
                    if shared.cv.wait_until(&mut slot, deadline) && slot.outcome.is_none() {
                        slot.listener = Listener::None;
                        break None;
                    }
                }
            }
        };
        drop(slot);
        if outcome.is_some() {
            self.shared = None;
        }
        outcome
    }

    /// Takes the outcome if it is there, without blocking; otherwise hands the token back.
    pub fn try_take(mut self) -> Result<Outcome<T, E, R>, Self> {
        let outcome = self.shared().slot.lock().outcome.take();
        match outcome {
            Some(outcome) => {
                self.shared = None;
                Ok(outcome)
            }
            None => Err(self),
        }
    }

    /// `true` if the outcome has been stated and not yet taken. Lock-free.
    pub fn is_ready(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.stated.load(Ordering::Acquire))
    }

    /// Requests cancellation. The token stays valid: wait on it to learn what happened.
    pub fn cancel(&self) {
        if let Some(shared) = &self.shared {
            shared.request_cancel();
        }
    }

    /// A cloneable handle that can request cancellation after the token is moved away.
    pub fn canceller(&self) -> Canceller<T, E, R> {
        Canceller {
            shared: Arc::clone(self.shared()),
        }
    }

    /// Runs `callback` exactly once with the outcome: inline if it is already stated, otherwise
    /// on the producer's thread when it is. Registering a callback is not a cancellation.
    pub fn on_complete(mut self, callback: impl FnOnce(Outcome<T, E, R>) + Send + 'static) {
        let shared = self
            .shared
            .take()
            .expect("posa::act::Token used after it delivered its outcome");
        let mut slot = shared.slot.lock();
        match slot.outcome.take() {
            Some(outcome) => {
                drop(slot);
                callback(outcome);
            }
            None => slot.listener = Listener::Callback(Box::new(callback)),
        }
    }

    /// A token for `f` applied to this one's value. Cancelling the new token cancels this one.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Token<U, E, R>
    where
        T: Send + 'static,
        E: Send + 'static,
        R: Send + 'static,
        U: Send + 'static,
    {
        let (completer, mut mapped) = pair_with_residue::<U, E, R>();
        mapped.detach_on_drop = self.detach_on_drop;
        let upstream = self.canceller();
        completer.on_cancel(move || upstream.cancel());
        self.on_complete(move |outcome| match outcome.map(f) {
            Outcome::Completed(r) | Outcome::CancelledAfterEffect(r) => completer.complete(r),
            Outcome::Cancelled(residue) => completer.cancel(residue),
            Outcome::Abandoned => drop(completer),
        });
        mapped
    }
}

impl<T, E, R> Token<T, E, R> {
    /// Dropping this token will request cancellation, whatever its producer chose: a scope
    /// guard for work that must not outlive its caller's interest.
    pub fn cancel_on_drop(mut self) -> Self {
        self.detach_on_drop = false;
        self
    }

    /// `true` if dropping this token detaches rather than cancels.
    pub fn detaches_on_drop(&self) -> bool {
        self.detach_on_drop
    }

    /// Lets the operation run to its end with nobody waiting for the outcome (what dropping a
    /// token does when its producer made it with [`detaching_pair`]; otherwise dropping asks
    /// for cancellation). The outcome is dropped when it is stated.
    ///
    /// ```
    /// let (completer, token) = posa::act::pair::<u8, ()>();
    /// token.detach();
    /// assert!(!completer.is_cancelled());
    /// completer.complete(Ok(1)); // nobody listens; nothing leaks
    /// ```
    pub fn detach(mut self) {
        self.shared = None;
    }
}

impl<T, E, R> Drop for Token<T, E, R> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            if self.detach_on_drop {
                // Release a registered waker now; the outcome is dropped when stated.
                shared.slot.lock().listener = Listener::None;
                return;
            }
            shared.request_cancel();
            // Release a registered waker now rather than when the producer finishes.
            shared.slot.lock().listener = Listener::None;
        }
    }
}

impl<T, E, R> Future for Token<T, E, R> {
    type Output = Outcome<T, E, R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared().slot.lock();
        let Some(outcome) = slot.outcome.take() else {
            match &mut slot.listener {
                Listener::Waker(w) if w.will_wake(cx.waker()) => {}
                listener => *listener = Listener::Waker(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        drop(slot);
        self.shared = None;
        Poll::Ready(outcome)
    }
}

impl<T, E, R> fmt::Debug for Token<T, E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// Requests cancellation of a token's operation from anywhere (see [`Token::canceller`]).
pub struct Canceller<T, E, R = ()> {
    shared: Arc<Shared<T, E, R>>,
}

impl<T, E, R> Canceller<T, E, R> {
    /// Requests cancellation; idempotent.
    pub fn cancel(&self) {
        self.shared.request_cancel();
    }
}

impl<T, E, R> Clone for Canceller<T, E, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, E, R> fmt::Debug for Canceller<T, E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Canceller")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// What an outcome says of itself, and what each type prints: a log line or a test
    /// failure must tell a completed token from a cancelled one.
    #[test]
    fn outcomes_and_tokens_describe_themselves() {
        let done: Outcome<u8, ()> = Outcome::Completed(Ok(1));
        let cancelled: Outcome<u8, ()> = Outcome::Cancelled(());
        let after: Outcome<u8, ()> = Outcome::CancelledAfterEffect(Ok(1));
        let abandoned: Outcome<u8, ()> = Outcome::Abandoned;
        assert!(done.is_completed() && !done.is_cancelled());
        assert!(!cancelled.is_completed() && cancelled.is_cancelled());
        assert!(!after.is_completed() && after.is_cancelled());
        assert!(!abandoned.is_completed() && !abandoned.is_cancelled());

        let (c, t) = pair::<u8, ()>();
        assert_eq!(format!("{c:?}"), "Completer { cancelled: false }");
        assert_eq!(format!("{t:?}"), "Token { ready: false }");
        assert_eq!(format!("{:?}", t.canceller()), "Canceller");
        let timed_out = t.wait_timeout(Duration::ZERO).unwrap_err();
        assert_eq!(format!("{timed_out:?}"), "TimedOut(..)");
        assert_eq!(
            timed_out.to_string(),
            "timed out waiting for a completion token"
        );
        c.complete(Ok(2));
        assert_eq!(timed_out.into_token().wait(), Outcome::Completed(Ok(2)));
    }

    /// A detached token lets its producer run on: no cancellation is requested (dropping it
    /// would request one), and the outcome, stated to no one, is dropped.
    #[test]
    fn a_detached_token_does_not_cancel_its_producer() {
        let (c, t) = pair::<u8, ()>();
        t.detach();
        assert!(!c.is_cancelled(), "detach is not a drop");
        c.complete(Ok(1));
        let (c, t) = pair::<u8, ()>();
        drop(t);
        assert!(c.is_cancelled(), "a dropped token asks for cancellation");
    }

    /// A residue with no `Debug` (a handler, a closure): the error still is an `Error`, so `?`
    /// takes it, and its `Debug` never prints the residue.
    #[test]
    fn question_mark_works_whatever_the_residue() {
        struct Opaque;
        fn run(fail: bool) -> Result<u8, Box<dyn std::error::Error>> {
            let (c, t) = pair_with_residue::<u8, std::io::Error, Opaque>();
            if fail {
                c.complete(Err(std::io::Error::other("boom")));
            } else {
                c.complete(Ok(3));
            }
            Ok(t.wait().into_result()?)
        }
        assert_eq!(run(false).unwrap(), 3);
        let e = run(true).unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(e.source().is_some(), "the io::Error is the source");
        let (c, t) = pair_with_residue::<u8, std::io::Error, Opaque>();
        c.cancel(Opaque);
        let cancelled = t.wait().into_result().unwrap_err();
        assert_eq!(format!("{cancelled:?}"), "Cancelled(..)");
    }

    #[test]
    fn complete_then_wait_yields_value() {
        let (c, t) = pair::<i32, ()>();
        c.complete(Ok(7));
        assert!(t.is_ready());
        assert_eq!(t.wait(), Outcome::Completed(Ok(7)));
    }

    #[test]
    fn wait_blocks_until_another_thread_completes() {
        let (c, t) = pair::<String, ()>();
        let h = std::thread::spawn(move || c.complete(Ok("done".to_owned())));
        assert_eq!(t.wait().into_result().unwrap(), "done");
        h.join().unwrap();
    }

    #[test]
    fn dropped_completer_abandons_instead_of_hanging() {
        let (c, t) = pair::<i32, ()>();
        let h = std::thread::spawn(move || drop(c));
        assert_eq!(t.wait(), Outcome::Abandoned);
        h.join().unwrap();
    }

    #[test]
    fn wait_timeout_hands_the_token_back_and_keeps_the_value() {
        let (c, t) = pair::<i32, ()>();
        let t = t
            .wait_timeout(Duration::from_millis(1))
            .unwrap_err()
            .into_token();
        c.complete(Ok(3));
        assert_eq!(
            t.wait_timeout(Duration::from_secs(60)).unwrap(),
            Outcome::Completed(Ok(3))
        );
    }

    #[test]
    fn try_take_returns_token_until_ready() {
        let (c, t) = pair::<i32, ()>();
        let t = t.try_take().unwrap_err();
        c.complete(Err(()));
        assert_eq!(t.try_take().unwrap(), Outcome::Completed(Err(())));
    }

    #[test]
    fn cancel_request_is_seen_and_effect_after_cancel_is_typed() {
        let (c, t) = pair::<i32, ()>();
        assert!(!c.is_cancelled());
        t.cancel();
        assert!(c.is_cancelled());
        c.complete(Ok(1));
        let outcome = t.wait();
        assert_eq!(outcome, Outcome::CancelledAfterEffect(Ok(1)));
        assert!(outcome.is_cancelled());
    }

    #[test]
    fn dropping_token_requests_cancel_and_runs_hook_once() {
        let (c, t) = pair::<i32, ()>();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        c.on_cancel(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        t.cancel();
        drop(t);
        assert!(c.is_cancelled());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // a hook installed after the request runs inline
        let h = Arc::clone(&hits);
        c.on_cancel(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cancelled_operation_returns_the_residue() {
        let (c, t) = pair_with_residue::<usize, (), Vec<u8>>();
        c.cancel(vec![1, 2, 3]);
        assert_eq!(t.wait().into_result(), Err(Error::Cancelled(vec![1, 2, 3])));
    }

    #[test]
    fn callback_runs_once_inline_when_already_complete() {
        let (c, t) = pair::<i32, ()>();
        c.complete(Ok(5));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        t.on_complete(move |o| s.lock().push(o));
        assert_eq!(*seen.lock(), vec![Outcome::Completed(Ok(5))]);
    }

    #[test]
    fn callback_runs_once_on_producer_side() {
        let (c, t) = pair::<i32, ()>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        t.on_complete(move |o| s.lock().push(o));
        assert!(seen.lock().is_empty());
        drop(c);
        assert_eq!(*seen.lock(), vec![Outcome::Abandoned]);
    }

    #[test]
    fn map_transforms_and_propagates_cancel_upstream() {
        let (c, t) = pair::<i32, ()>();
        let mapped = t.map(|v| v * 2);
        c.complete(Ok(21));
        assert_eq!(mapped.wait(), Outcome::Completed(Ok(42)));

        let (c, t) = pair::<i32, ()>();
        let mapped = t.map(|v| v + 1);
        mapped.cancel();
        assert!(c.is_cancelled());
        c.cancel(());
        assert_eq!(mapped.wait(), Outcome::Cancelled(()));
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn future_replaces_waker_on_every_poll() {
        let (c, mut t) = pair::<i32, ()>();
        let first = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
        let second = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
        let w1 = Waker::from(std::sync::Arc::clone(&first));
        let w2 = Waker::from(std::sync::Arc::clone(&second));
        assert!(
            Pin::new(&mut t)
                .poll(&mut Context::from_waker(&w1))
                .is_pending()
        );
        assert!(
            Pin::new(&mut t)
                .poll(&mut Context::from_waker(&w2))
                .is_pending()
        );
        c.complete(Ok(9));
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            0,
            "stale waker must not be woken"
        );
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        let ready = Pin::new(&mut t).poll(&mut Context::from_waker(&w2));
        assert_eq!(ready, Poll::Ready(Outcome::Completed(Ok(9))));
    }

    #[test]
    fn token_set_yields_in_completion_order_and_cancels_rest_on_drop() {
        let mut set = TokenSet::new();
        let (a, ta) = pair::<u8, ()>();
        let (b, tb) = pair::<u8, ()>();
        let (c, tc) = pair::<u8, ()>();
        set.insert(ta);
        set.insert(tb);
        set.insert(tc);
        b.complete(Ok(2));
        assert_eq!(set.next(), Some((1, Outcome::Completed(Ok(2)))));
        assert_eq!(set.len(), 2);
        a.complete(Ok(1));
        assert_eq!(set.next().unwrap().0, 0);
        assert!(
            set.next_deadline(Instant::now() + Duration::from_millis(1))
                .is_err()
        );
        drop(set);
        assert!(c.is_cancelled());
    }

    #[test]
    fn wait_all_keeps_token_order() {
        let (a, ta) = pair::<u8, ()>();
        let (b, tb) = pair::<u8, ()>();
        b.complete(Ok(2));
        a.complete(Ok(1));
        let outs: Vec<_> = wait_all([ta, tb])
            .into_iter()
            .map(|o| o.into_result().unwrap())
            .collect();
        assert_eq!(outs, vec![1, 2]);
    }
}
