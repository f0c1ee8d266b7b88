//! The work-stealing deques behind the FIFO pool: crossbeam-deque's `Injector`, `Worker` and
//! `Stealer` in a normal build, a lock-based stand-in with the same calls under `posa_loom`.
//!
//! crossbeam-deque is verified by its authors (and is not loom-aware); what posa's loom models
//! must cover is the pool's own protocol around the deques: who pushes where, the `pending`
//! count, sleeping and waking, shutdown. The stand-in keeps the observable behaviour that
//! protocol relies on: a FIFO worker deque whose owner pops from the front, stealers that take
//! from the same front, an injector that hands batches to a worker.

#[cfg(not(posa_loom))]
pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};

#[cfg(posa_loom)]
pub(crate) use model::{Injector, Steal, Stealer, Worker};

#[cfg(posa_loom)]
mod model {
    use std::collections::VecDeque;

    use crate::sync::{Arc, Mutex};

    /// The result of a steal attempt (`crossbeam_deque::Steal`).
    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        #[allow(dead_code)] // crossbeam's can ask for a retry; the model never does
        Retry,
    }

    /// The injector is a stealer that nobody owns: the same queue, pushed to from outside.
    pub(crate) type Injector<T> = Stealer<T>;

    pub(crate) struct Worker<T>(Arc<Mutex<VecDeque<T>>>);

    impl<T> Worker<T> {
        pub(crate) fn new_fifo() -> Self {
            Self(Arc::new(Mutex::new(VecDeque::new())))
        }
        pub(crate) fn push(&self, task: T) {
            self.0.lock().push_back(task);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.0.lock().pop_front()
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.0.lock().is_empty()
        }
        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer(Arc::clone(&self.0))
        }
    }

    pub(crate) struct Stealer<T>(Arc<Mutex<VecDeque<T>>>);

    impl<T> Stealer<T> {
        pub(crate) fn new() -> Self {
            Self(Arc::new(Mutex::new(VecDeque::new())))
        }
        pub(crate) fn push(&self, task: T) {
            self.0.lock().push_back(task);
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.0.lock().is_empty()
        }
        pub(crate) fn len(&self) -> usize {
            self.0.lock().len()
        }
        pub(crate) fn steal(&self) -> Steal<T> {
            self.0
                .lock()
                .pop_front()
                .map_or(Steal::Empty, Steal::Success)
        }
        pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
            let mut q = self.0.lock();
            let Some(first) = q.pop_front() else {
                return Steal::Empty;
            };
            let more = q.len() / 2;
            let batch: Vec<T> = q.drain(..more).collect();
            drop(q);
            dest.0.lock().extend(batch);
            Steal::Success(first)
        }
    }
}
