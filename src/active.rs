//! Active Object: decouple calling a method from running it, on a thread that owns the servant.
//!
//! An [`ActiveObject<S>`] owns a servant `S` on its own scheduler thread. A [`Proxy`]
//! (cloneable, `Send`) turns each call into a *method request* on a bounded *activation list*
//! and returns an [`act`] token at once. The scheduler runs requests one at a time,
//! so the servant needs no locking.
//!
//! - Order: higher priority first; equal priorities in call order.
//! - Guards: a request may carry a guard over the servant's state; it runs only once the guard
//!   holds (the bounded buffer's `get` waits until something was `put`). Guards are re-checked
//!   after every request runs, since only a request can change the servant.
//! - Bounded: a full activation list blocks [`Proxy::call`] ([`Proxy::try_call`] refuses
//!   instead, handing the closure back), so callers cannot grow memory without limit.
//! - A panicking request answers `Err(RunError::Panicked)`; the servant keeps serving in the
//!   state the panicking method left it (write methods so that a panic midway leaves the
//!   servant valid, or have them restore invariants first).
//! - [`ActiveObject::shutdown`] stops intake, cancels every pending request (its token sees
//!   `Cancelled`), and hands the servant back.
//!
//! ```
//! use posa::active::ActiveObject;
//!
//! // A bank account whose withdrawals wait until the money is there.
//! let account = ActiveObject::spawn(0i64)?;
//! let proxy = account.proxy();
//! let withdrawal = proxy.call_when(|balance: &i64| *balance >= 50, |b: &mut i64| { *b -= 50; *b }).unwrap();
//! assert!(!withdrawal.is_ready());
//! proxy.call(|b: &mut i64| *b += 80).unwrap().wait();
//! assert_eq!(withdrawal.wait().into_result().unwrap(), 30);
//! assert_eq!(account.shutdown(), 30);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::act::{self, Completer, Token};
use crate::error::{Refused, RunError};
use crate::monitor::{Condition, Monitor};
use crate::sync::Arc;
use crate::sync::thread::{self, JoinHandle};

/// The token a method request answers through.
pub type CallToken<T> = Token<T, RunError>;

trait Request<S>: Send {
    /// The guard holds (or panicked: then `run` answers with the panic and skips the method).
    fn ready(&self, servant: &S) -> bool;
    fn run(self: Box<Self>, servant: &mut S) -> crate::intercept::Ended;
    fn cancel(self: Box<Self>);
    /// Answers without running (an interceptor refused it).
    fn refuse(self: Box<Self>, error: RunError);
    fn abandoned(&self) -> bool;
}

type Guard<S> = Box<dyn Fn(&S) -> bool + Send>;

struct Call<S, F, T> {
    guard: Option<Guard<S>>,
    guard_panic: std::cell::Cell<Option<String>>,
    f: F,
    completer: Completer<T, RunError>,
}

impl<S, F, T> Request<S> for Call<S, F, T>
where
    F: FnOnce(&mut S) -> T + Send,
    T: Send,
{
    fn ready(&self, servant: &S) -> bool {
        let Some(guard) = &self.guard else {
            return true;
        };
        match catch_unwind(AssertUnwindSafe(|| guard(servant))) {
            Ok(holds) => holds,
            Err(p) => {
                self.guard_panic.set(Some(format!(
                    "guard panicked: {}",
                    crate::panic_message(&*p)
                )));
                true
            }
        }
    }

    fn run(self: Box<Self>, servant: &mut S) -> crate::intercept::Ended {
        use crate::intercept::Ended;
        let Call {
            f,
            completer,
            guard_panic,
            ..
        } = *self;
        if let Some(msg) = guard_panic.into_inner() {
            completer.complete(Err(RunError::Panicked(msg)));
            return Ended::Panicked;
        }
        if completer.is_cancelled() {
            completer.cancel(()); // the caller gave up before it ran
            return Ended::Ok;
        }
        let result = catch_unwind(AssertUnwindSafe(|| f(servant)))
            .map_err(|p| RunError::Panicked(crate::panic_message(&*p)));
        let outcome = if result.is_ok() {
            Ended::Ok
        } else {
            Ended::Panicked
        };
        completer.complete(result);
        outcome
    }

    fn refuse(self: Box<Self>, error: RunError) {
        self.completer.complete(Err(error));
    }

    fn cancel(self: Box<Self>) {
        self.completer.cancel(());
    }

    fn abandoned(&self) -> bool {
        self.completer.is_cancelled()
    }
}

struct Entry<S> {
    priority: u8,
    seq: u64,
    request: Box<dyn Request<S>>,
    /// What interceptors see (only with a chain).
    dispatch: Option<Box<crate::intercept::Dispatch>>,
}

struct List<S> {
    /// Sorted: higher priority first, then lower seq.
    entries: Vec<Entry<S>>,
    capacity: usize,
    next_seq: u64,
    open: bool,
}

struct Inner<S> {
    list: Monitor<List<S>>,
    arrived: Condition,
    room: Condition,
    chain: crate::intercept::Chain,
}

/// The caller's side: cloneable and `Send`; each call returns a token at once.
pub struct Proxy<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Proxy<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for Proxy<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proxy")
    }
}

impl<S: Send + 'static> Proxy<S> {
    /// Queues `f`, waiting for room if the activation list is full. Dropping the token lets
    /// the call run (its result is dropped); [`Token::cancel`](crate::act::Token::cancel)
    /// withdraws it if it has not started.
    pub fn call<F, T>(&self, f: F) -> Result<CallToken<T>, Refused<F>>
    where
        F: FnOnce(&mut S) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.enqueue(0, None, f, true)
    }

    /// Queues `f` to run once `guard` holds for the servant. Dropping the token withdraws the
    /// request (it may wait on its guard indefinitely; nobody would see it run), unlike
    /// [`call`](Self::call).
    pub fn call_when<G, F, T>(&self, guard: G, f: F) -> Result<CallToken<T>, Refused<F>>
    where
        G: Fn(&S) -> bool + Send + 'static,
        F: FnOnce(&mut S) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.enqueue(0, Some(Box::new(guard)), f, true)
    }

    /// Queues `f` with a priority (higher first) and an optional guard. A dropped token lets
    /// an unguarded call run and withdraws a guarded one, as [`call`](Self::call) and
    /// [`call_when`](Self::call_when).
    pub fn call_with<F, T>(
        &self,
        priority: u8,
        guard: Option<Guard<S>>,
        f: F,
    ) -> Result<CallToken<T>, Refused<F>>
    where
        F: FnOnce(&mut S) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.enqueue(priority, guard, f, true)
    }

    /// Queues `f` if there is room now; otherwise hands it back in [`Refused::Full`].
    pub fn try_call<F, T>(&self, f: F) -> Result<CallToken<T>, Refused<F>>
    where
        F: FnOnce(&mut S) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.enqueue(0, None, f, false)
    }

    fn enqueue<F, T>(
        &self,
        priority: u8,
        guard: Option<Guard<S>>,
        f: F,
        block: bool,
    ) -> Result<CallToken<T>, Refused<F>>
    where
        F: FnOnce(&mut S) -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut list = self.inner.list.lock();
        loop {
            if !list.open {
                return Err(Refused::Closed(f));
            }
            if list.entries.len() < list.capacity {
                break;
            }
            if !block {
                return Err(Refused::Full(f));
            }
            list.wait_on_while(&self.inner.room, |l| {
                l.open && l.entries.len() >= l.capacity
            });
        }
        // A plain call detaches when its token is dropped (it runs: what `let _ =
        // proxy.call(..)` means); a guarded one is withdrawn, since it may wait on its guard
        // indefinitely and nobody would be left to see it run.
        let (completer, token) = if guard.is_some() {
            act::pair()
        } else {
            act::detaching_pair()
        };
        let seq = list.next_seq;
        list.next_seq += 1;
        let at = list.entries.partition_point(|e| {
            (e.priority, std::cmp::Reverse(e.seq)) > (priority, std::cmp::Reverse(seq))
        });
        list.entries.insert(
            at,
            Entry {
                priority,
                seq,
                dispatch: (!self.inner.chain.is_empty()).then(|| {
                    let mut d = crate::intercept::Dispatch::new(
                        crate::intercept::Point::MethodRequest,
                        seq,
                    );
                    d.queued_at = Some(std::time::Instant::now());
                    d.stamp = self.inner.chain.stamp();
                    Box::new(d)
                }),
                request: Box::new(Call {
                    guard,
                    guard_panic: std::cell::Cell::new(None),
                    f,
                    completer,
                }),
            },
        );
        drop(list);
        self.inner.arrived.notify_one();
        Ok(token)
    }

    /// Requests waiting in the activation list.
    pub fn pending(&self) -> usize {
        self.inner.list.lock().entries.len()
    }
}

/// A servant on its own thread, reached through [`Proxy`]s. See the [module docs](self).
pub struct ActiveObject<S> {
    proxy: Proxy<S>,
    thread: Option<JoinHandle<S>>,
}

impl<S: Send + 'static> ActiveObject<S> {
    /// Starts `servant` on a new thread with an activation list of 1024.
    pub fn spawn(servant: S) -> io::Result<Self> {
        Self::with_capacity(servant, 1024)
    }

    /// Starts `servant` with an activation list of `capacity` (at least 1) requests.
    pub fn with_capacity(servant: S, capacity: usize) -> io::Result<Self> {
        Self::with_interceptors(servant, capacity, crate::intercept::Chain::new())
    }

    /// Like [`with_capacity`](Self::with_capacity), with interceptors around every method
    /// request ([`Point::MethodRequest`](crate::intercept::Point)): a refused request answers
    /// `RunError::Rejected` (or `DeadlineExceeded`) without running.
    pub fn with_interceptors(
        servant: S,
        capacity: usize,
        chain: crate::intercept::Chain,
    ) -> io::Result<Self> {
        let inner = Arc::new(Inner {
            list: Monitor::new(List {
                entries: Vec::new(),
                capacity: capacity.max(1),
                next_seq: 0,
                open: true,
            }),
            arrived: Condition::new(),
            room: Condition::new(),
            chain,
        });
        let scheduler = Arc::clone(&inner);
        let thread = thread::Builder::new()
            .name("posa-active-object".to_owned())
            .spawn(move || schedule(&scheduler, servant))?;
        Ok(Self {
            proxy: Proxy { inner },
            thread: Some(thread),
        })
    }

    /// A proxy to call the servant through (clone it freely).
    pub fn proxy(&self) -> Proxy<S> {
        self.proxy.clone()
    }

    /// Stops intake, cancels pending requests (their tokens see `Cancelled`), waits for the
    /// running request, and returns the servant.
    pub fn shutdown(mut self) -> S {
        match self.stop() {
            Some(Ok(servant)) => servant,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => unreachable!("the scheduler thread is joined only by stop"),
        }
    }

    fn stop(&mut self) -> Option<std::thread::Result<S>> {
        close(&self.proxy.inner);
        Some(self.thread.take()?.join())
    }
}

impl<S> fmt::Debug for ActiveObject<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveObject").finish_non_exhaustive()
    }
}

impl<S> Drop for ActiveObject<S> {
    /// Shuts down like [`shutdown`](ActiveObject::shutdown) and drops the servant.
    fn drop(&mut self) {
        close(&self.proxy.inner);
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // a scheduler panic is not re-raised inside drop
        }
    }
}

/// Stops intake and cancels every pending request.
fn close<S>(inner: &Inner<S>) {
    let cancelled: Vec<Entry<S>> = {
        let mut list = inner.list.lock();
        list.open = false;
        std::mem::take(&mut list.entries)
    };
    inner.arrived.notify_all();
    inner.room.notify_all();
    for e in cancelled {
        e.request.cancel();
    }
}

/// The scheduler: runs the first request (by priority, then arrival) whose guard holds.
fn schedule<S>(inner: &Inner<S>, mut servant: S) -> S {
    loop {
        let (request, dispatch) = {
            let mut list = inner.list.lock();
            loop {
                // Requests whose callers gave up (cancelled or dropped their tokens) leave now,
                // so a guard that never holds cannot pin one in the list forever.
                let before = list.entries.len();
                let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut list.entries)
                    .into_iter()
                    .partition(|e| e.request.abandoned());
                list.entries = kept;
                if list.entries.len() < before {
                    inner.room.notify_all();
                }
                for e in gone {
                    e.request.cancel();
                }
                if let Some(i) = list.entries.iter().position(|e| e.request.ready(&servant)) {
                    let e = list.entries.remove(i);
                    break (e.request, e.dispatch);
                }
                if !list.open {
                    return servant;
                }
                // Nothing runnable: only a new request can change that (guards read the
                // servant, and only requests change it).
                let seen = list.next_seq;
                list.wait_on_while(&inner.arrived, |l| l.open && l.next_seq == seen);
            }
        };
        inner.room.notify_one();
        let Some(d) = dispatch else {
            request.run(&mut servant);
            continue;
        };
        if let Err(r) = inner.chain.before(&d) {
            request.refuse(if r.reason == crate::intercept::Reason::DeadlineExceeded {
                RunError::DeadlineExceeded
            } else {
                RunError::Rejected(r)
            });
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = request.run(&mut servant);
        inner.chain.after(&d, outcome, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::Outcome;

    #[test]
    fn guarded_get_waits_for_put_and_priorities_order_the_rest() {
        let buffer = ActiveObject::spawn(Vec::<u32>::new()).unwrap();
        let p = buffer.proxy();
        let get = p
            .call_when(|v: &Vec<u32>| !v.is_empty(), |v: &mut Vec<u32>| v.remove(0))
            .unwrap();
        assert!(!get.is_ready(), "nothing was put yet");
        p.call(|v: &mut Vec<u32>| v.push(7)).unwrap().wait();
        assert_eq!(get.wait().into_result().unwrap(), 7);
        assert!(buffer.shutdown().is_empty());
    }

    #[test]
    fn higher_priority_requests_run_first() {
        let ao = ActiveObject::spawn(Vec::<u8>::new()).unwrap();
        let p = ao.proxy();
        // Hold the scheduler on a guarded gate so the next three queue up.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Mutex::new(rx);
        let gate = p
            .call(move |_: &mut Vec<u8>| rx.lock().unwrap().recv().unwrap())
            .unwrap();
        let tokens: Vec<_> = [(0u8, 1u8), (5, 2), (5, 3), (1, 4)]
            .into_iter()
            .map(|(prio, v)| {
                p.call_with(prio, None, move |s: &mut Vec<u8>| s.push(v))
                    .unwrap()
            })
            .collect();
        tx.send(()).unwrap();
        gate.wait();
        for t in tokens {
            t.wait();
        }
        assert_eq!(ao.shutdown(), vec![2, 3, 4, 1]);
    }

    #[test]
    fn panicking_request_answers_an_error_and_the_servant_keeps_serving() {
        let ao = ActiveObject::spawn(1u32).unwrap();
        let p = ao.proxy();
        let bad = p
            .call(|n: &mut u32| -> u32 {
                *n = 2; // the state the panicking method leaves behind
                panic!("overdrawn")
            })
            .unwrap();
        assert_eq!(
            bad.wait(),
            Outcome::Completed(Err(RunError::Panicked("overdrawn".into())))
        );
        assert_eq!(
            p.call(|n: &mut u32| *n).unwrap().wait().into_result(),
            Ok(2)
        );
        assert_eq!(ao.shutdown(), 2);
    }

    #[test]
    fn shutdown_cancels_pending_requests_and_refuses_new_ones() {
        let ao = ActiveObject::spawn(0u8).unwrap();
        let p = ao.proxy();
        let never = p.call_when(|_: &u8| false, |_: &mut u8| ()).unwrap();
        assert_eq!(ao.shutdown(), 0);
        assert_eq!(never.wait(), Outcome::Cancelled(()));
        assert!(matches!(p.call(|_: &mut u8| ()), Err(Refused::Closed(_))));
    }

    #[test]
    fn a_panicking_guard_answers_its_request_and_the_scheduler_survives() {
        let ao = ActiveObject::spawn(0u8).unwrap();
        let p = ao.proxy();
        let bad = p
            .call_when(|_: &u8| panic!("bad guard"), |_: &mut u8| 1u8)
            .unwrap();
        assert!(
            matches!(bad.wait(), Outcome::Completed(Err(RunError::Panicked(m))) if m.contains("bad guard"))
        );
        assert_eq!(
            p.call(|n: &mut u8| *n + 1).unwrap().wait().into_result(),
            Ok(1)
        );
        drop(ao);
    }

    #[test]
    fn an_abandoned_guarded_request_leaves_the_list_at_the_next_scan() {
        let ao = ActiveObject::with_capacity(0u8, 2).unwrap();
        let p = ao.proxy();
        drop(p.call_when(|_: &u8| false, |_: &mut u8| ())); // the caller gives up
        // The next arrival wakes the scheduler, which purges the abandoned request.
        assert_eq!(p.call(|n: &mut u8| *n).unwrap().wait().into_result(), Ok(0));
        assert_eq!(p.pending(), 0);
        drop(ao);
    }

    #[test]
    fn full_activation_list_refuses_try_call() {
        let ao = ActiveObject::with_capacity(0u8, 1).unwrap();
        let p = ao.proxy();
        let _blocked = p.call_when(|_: &u8| false, |_: &mut u8| ()).unwrap();
        match p.try_call(|_: &mut u8| 5u8) {
            Err(Refused::Full(f)) => assert_eq!(f(&mut 0), 5, "the closure comes back"),
            other => panic!("expected Full, got {other:?}"),
        }
        drop(ao);
    }
}
