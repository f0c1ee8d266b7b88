//! The two drivers of a [`Watcher`]: a reactor handler, and a proactor whose file reads complete
//! with the data.

use crate::sync::Arc;
use crate::sync::thread::JoinHandle;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::reactor::Interest;
use mio::unix::SourceFd;

use super::{CHUNK, Sink, Step, Watcher, read_chunk};
use crate::act::Outcome;
use crate::proactor::{Done, Proactor, ProactorHandle};
use crate::reactor::{Context, EventHandler, Reactor, ReactorHandle, Readiness, ShutdownReport};
use crate::sync::Mutex;

/// Steps run per upcall before the reactor driver yields the loop (`call_again`).
const BUDGET: usize = 256;

/// Which event-loop model drives the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Model {
    /// Readiness: the handler reads the events and the appended data itself.
    #[default]
    Reactor,
    /// Completion: appended data arrives as the completion of a file-read operation.
    Proactor,
}

impl std::str::FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reactor" => Ok(Model::Reactor),
            "proactor" => Ok(Model::Proactor),
            other => Err(format!(
                "unknown model {other:?} (expected reactor or proactor)"
            )),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Reactor => "reactor",
            Model::Proactor => "proactor",
        })
    }
}

/// A watcher running on its own loop thread. [`stop`](Running::stop) ends it.
pub struct Running {
    handle: ReactorHandle,
    thread: Option<JoinHandle<io::Result<ShutdownReport>>>,
    proactor: Option<Proactor>,
}

impl Running {
    /// The loop's handle (to shut it down from elsewhere, e.g. a signal handler).
    pub fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// Stops the watcher and waits for its loop.
    pub fn stop(mut self) -> io::Result<()> {
        drop(self.handle.shutdown(Duration::ZERO));
        self.join()
    }

    /// Waits for the loop to stop (after a shutdown through [`handle`](Self::handle)).
    pub fn join(&mut self) -> io::Result<()> {
        if let Some(t) = self.thread.take() {
            t.join()
                .unwrap_or_else(|_| Err(io::Error::other("watcher thread panicked")))?;
        }
        if let Some(p) = self.proactor.take() {
            p.shutdown(Duration::ZERO);
            p.join()?;
        }
        Ok(())
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("proactor", &self.proactor.is_some())
            .finish()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() || self.proactor.is_some() {
            drop(self.handle.shutdown(Duration::ZERO));
            let _ = self.join();
        }
    }
}

struct ReactorWatch {
    watcher: Watcher,
    fd: RawFd,
    steps: VecDeque<Step>,
    sink: Sink,
}

impl ReactorWatch {
    fn run(&mut self, cx: &mut Context<'_>) {
        let mut budget = BUDGET;
        loop {
            while let Some(step) = self.steps.pop_front() {
                match step {
                    Step::Emit(ev) => (self.sink)(ev),
                    Step::Read { path, file, offset } => {
                        // The reactor's way: the handler does the read itself.
                        let data = read_chunk(&file, offset);
                        self.watcher.appended(&path, offset, &data, &mut self.steps);
                    }
                }
                budget -= 1;
                if budget == 0 {
                    cx.call_again(Readiness::default());
                    return;
                }
            }
            match self.watcher.poll_events(&mut self.steps) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(error = %e, "watch: reading inotify events failed");
                    cx.close();
                    return;
                }
            }
        }
    }
}

impl EventHandler for ReactorWatch {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut SourceFd(&self.fd), Interest::READABLE)?;
        self.run(cx);
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.run(cx);
    }
}

/// Runs `watcher` on a reactor on its own thread, sending events to `sink`.
pub fn watch_reactor(watcher: Watcher, sink: Sink) -> io::Result<Running> {
    let mut reactor = Reactor::new()?;
    let fd = watcher.fd();
    reactor.add(ReactorWatch {
        watcher,
        fd,
        steps: VecDeque::new(),
        sink,
    })?;
    let handle = reactor.handle();
    let thread = crate::sync::thread::Builder::new()
        .name("posa-watch".to_owned())
        .spawn(move || reactor.run())?;
    Ok(Running {
        handle,
        thread: Some(thread),
        proactor: None,
    })
}

struct WatchState {
    watcher: Watcher,
    steps: VecDeque<Step>,
    sink: Sink,
    /// A file read is in flight: its completion continues the steps.
    busy: bool,
}

/// The proactor's way: runs steps in order; a read step initiates a file-read operation and
/// the rest continue from its completion.
fn drive(state: &Arc<Mutex<WatchState>>, proactor: &ProactorHandle) {
    let mut s = state.lock();
    if s.busy {
        return;
    }
    loop {
        while let Some(step) = s.steps.pop_front() {
            match step {
                Step::Emit(ev) => (s.sink)(ev),
                Step::Read { path, file, offset } => {
                    s.busy = true;
                    drop(s);
                    let (state2, proactor2) = (Arc::clone(state), proactor.clone());
                    let read = proactor.read_file_at(file, offset, vec![0; CHUNK]);
                    read.on_complete(move |outcome| {
                        let data = match outcome {
                            Outcome::Completed(Ok(Done { mut buf, n })) => {
                                buf.truncate(n);
                                buf
                            }
                            _ => Vec::new(),
                        };
                        {
                            let mut s = state2.lock();
                            s.busy = false;
                            let s = &mut *s;
                            s.watcher.appended(&path, offset, &data, &mut s.steps);
                        }
                        drive(&state2, &proactor2);
                    });
                    return;
                }
            }
        }
        let st = &mut *s;
        match st.watcher.poll_events(&mut st.steps) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %e, "watch: reading inotify events failed");
                return;
            }
        }
    }
}

struct ProactorWatch {
    state: Arc<Mutex<WatchState>>,
    proactor: ProactorHandle,
    fd: RawFd,
}

impl EventHandler for ProactorWatch {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut SourceFd(&self.fd), Interest::READABLE)?;
        drive(&self.state, &self.proactor);
        Ok(())
    }

    fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {
        // While a read is in flight its completion will look at the events; otherwise now.
        drive(&self.state, &self.proactor);
    }
}

/// Runs `watcher` with its file reads on a proactor, sending events to `sink`: the reads are
/// operations the proactor completes (on io_uring the kernel performs them, where the probe
/// finds it usable). inotify's readiness is watched by a reactor of its own.
pub fn watch_proactor(watcher: Watcher, sink: Sink) -> io::Result<Running> {
    let proactor = Proactor::new()?;
    tracing::debug!(backend = %proactor.backend(), "posa watch: proactor backend");
    let fd = watcher.fd();
    let mut reactor = Reactor::new()?;
    let state = Arc::new(Mutex::new(WatchState {
        watcher,
        steps: VecDeque::new(),
        sink,
        busy: false,
    }));
    reactor.add(ProactorWatch {
        state,
        proactor: proactor.handle(),
        fd,
    })?;
    let handle = reactor.handle();
    let thread = crate::sync::thread::Builder::new()
        .name("posa-watch".to_owned())
        .spawn(move || reactor.run())?;
    Ok(Running {
        handle,
        thread: Some(thread),
        proactor: Some(proactor),
    })
}
