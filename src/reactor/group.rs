//! A group of reactors, each on a thread of its own: the one way posa starts, shuts down and
//! joins several event loops (the reactor-per-thread server, the proactor's loops).
//!
//! # Invariants
//! - Every thread the group spawned is joined exactly once: by [`ReactorGroup::join`], or by
//!   `Drop` (after a shutdown with no grace) when nobody joined.
//! - A spawn that fails part-way shuts down and joins the loops already started, so an error
//!   leaves no thread behind.

use std::io;
use std::time::Duration;

use super::{Reactor, ReactorHandle, ShutdownReport};
use crate::sync::Mutex;
use crate::sync::thread::{self, JoinHandle};

/// Event-loop threads that each end with a shutdown report: joined once, in order, by
/// whoever asks first (the reactor group, the io_uring proactor's loops, Leader/Followers).
pub(crate) struct LoopThreads {
    threads: Mutex<Vec<JoinHandle<io::Result<ShutdownReport>>>>,
    /// What a thread is, for the error when one panicked ("reactor thread").
    what: &'static str,
}

impl LoopThreads {
    pub(crate) fn new(what: &'static str) -> Self {
        LoopThreads {
            threads: Mutex::new(Vec::new()),
            what,
        }
    }

    pub(crate) fn push(&self, thread: JoinHandle<io::Result<ShutdownReport>>) {
        self.threads.lock().push(thread);
    }

    /// `true` once every thread has been joined (or none was started).
    pub(crate) fn is_empty(&self) -> bool {
        self.threads.lock().is_empty()
    }

    /// Waits for every thread; their reports in order. A second call returns an empty list.
    pub(crate) fn join(&self) -> io::Result<Vec<ShutdownReport>> {
        let threads = std::mem::take(&mut *self.threads.lock());
        let what = self.what;
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other(format!("{what} panicked"))))
            })
            .collect()
    }
}

/// Reactors running on their own threads. See [`posa::reactor`](crate::reactor).
pub struct ReactorGroup {
    handles: Vec<ReactorHandle>,
    threads: LoopThreads,
}

impl ReactorGroup {
    /// Runs each reactor on a thread named `{name}-{i}`.
    pub fn spawn(reactors: Vec<Reactor>, name: &str) -> io::Result<Self> {
        let handles: Vec<ReactorHandle> = reactors.iter().map(Reactor::handle).collect();
        let group = ReactorGroup {
            handles,
            threads: LoopThreads::new("reactor thread"),
        };
        for (i, mut reactor) in reactors.into_iter().enumerate() {
            let thread = thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || reactor.run())?; // on error, Drop joins the ones started
            group.threads.push(thread);
        }
        Ok(group)
    }

    /// Handles to the loops, in the order they were given.
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// Starts a graceful shutdown of every loop (see [`ReactorHandle::shutdown`]); returns at
    /// once.
    pub fn shutdown(&self, grace: Duration) {
        for h in &self.handles {
            drop(h.shutdown(grace));
        }
    }

    /// Waits for every loop to stop; returns their reports in order. A second call returns an
    /// empty list.
    pub fn join(&self) -> io::Result<Vec<ShutdownReport>> {
        self.threads.join()
    }
}

impl Drop for ReactorGroup {
    /// Shuts the loops down with no grace and joins them, unless [`join`](Self::join) did.
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shutdown(Duration::ZERO);
        let _ = self.join();
    }
}

impl std::fmt::Debug for ReactorGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorGroup")
            .field("loops", &self.handles.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::threads_named;

    /// cargo-mutants (issue 14): dropping a group that was neither shut down nor joined stops
    /// and joins its loops (no thread left behind).
    #[test]
    fn dropping_a_group_stops_and_joins_its_loops() {
        let reactors = (0..2).map(|_| Reactor::new().unwrap()).collect();
        let group = ReactorGroup::spawn(reactors, "grpdrop").unwrap();
        // A thread names itself once it starts: wait until each loop has run a job.
        let (tx, rx) = std::sync::mpsc::channel();
        for h in group.handles() {
            let tx = tx.clone();
            h.post(move |_| tx.send(()).unwrap()).unwrap();
        }
        rx.recv().unwrap();
        rx.recv().unwrap();
        assert_eq!(threads_named("grpdrop-"), 2);
        drop(group);
        assert_eq!(threads_named("grpdrop-"), 0);
    }
}
