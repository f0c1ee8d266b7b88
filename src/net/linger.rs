//! Lingering close: how posa closes a connection that may still hold unread input.
//!
//! Closing a TCP socket whose receive queue holds unread bytes makes the kernel send a reset
//! instead of an orderly end of stream, and a reset also destroys whatever the peer had
//! received but not yet read: the last replies of a server vanish on their way. A lingering
//! close avoids it, as nginx's `lingering_close` does:
//!
//! 1. write what is still owed (if anything), then shut down the write side (the peer reads
//!    every reply, then end of stream);
//! 2. read and discard whatever the peer still sends, until its end of stream;
//! 3. close. A peer that never ends its stream is cut off when the linger time runs out.
//!
//! Bounded: the time is capped by the caller's timer, reads are discarded through a fixed
//! stack buffer at most [`LINGER_READ_BUDGET`] bytes per upcall, and the connection keeps
//! whatever connection-limit guard it held until it closes.
//!
//! [`LingerState`] is the algorithm, for a handler that owns its stream and wants to finish
//! this way itself (the echo services do, when their grace runs out or they idle out);
//! [`Linger`] is a handler of its own for a stream nobody else serves (a connection the
//! acceptor refuses).

use std::io::{self, Read};
use std::net::Shutdown;
use std::time::Duration;

use super::{ConnGuard, Stream};
use crate::reactor::{Context, EventHandler, Interest, Readiness, TimerId};

/// Bytes discarded per upcall at most (the rest on the next turn).
pub const LINGER_READ_BUDGET: usize = 256 * 1024;

/// Where a lingering close is. Closing a socket whose receive queue holds unread bytes sends
/// a reset, which also destroys what the peer had received but not read; a lingering close
/// (nginx's `lingering_close`) avoids it: write what is owed, shut down the write side, read
/// and discard until the peer's end of stream, then close. The caller bounds it with a timer.
#[derive(Debug, Default)]
pub struct LingerState {
    /// The write side is shut down.
    fin_sent: bool,
    /// Bytes read and thrown away.
    discarded: u64,
}

impl LingerState {
    /// A lingering close about to start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of input thrown away so far.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Moves the close on as far as the socket allows: writes `owed[*sent..]`, then shuts down
    /// the write side, then discards input. `Ok(true)` once the peer's end of stream was read
    /// (close now); `Ok(false)` to wait for readiness (or, when the read budget ran out, to be
    /// called again: `call_again`); an error means the connection is gone (close now).
    pub fn step(
        &mut self,
        stream: &mut Stream,
        owed: &[u8],
        sent: &mut usize,
        cx: &mut Context<'_>,
    ) -> io::Result<bool> {
        if *sent < owed.len() {
            super::write_from(stream, owed, sent)?;
        }
        if *sent >= owed.len() && !self.fin_sent {
            match stream.shutdown(Shutdown::Write) {
                // Already shut down (the service ended its stream itself): the same.
                Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                _ => self.fin_sent = true,
            }
        }
        let mut buf = [0u8; 8192];
        let mut budget = LINGER_READ_BUDGET;
        loop {
            match stream.read(&mut buf) {
                // End of stream: with our FIN out, the close is orderly. Before it (the peer
                // half-closed while we still owe bytes), keep writing until the timer.
                Ok(0) => return Ok(self.fin_sent),
                Ok(n) => {
                    self.discarded += n as u64;
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        cx.call_again(Readiness {
                            readable: true,
                            ..Readiness::default()
                        });
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A service's own lingering close in progress: the algorithm's state and the timer that
/// bounds it. What the echo services hold while they close (and idle or forced connections
/// share): [`start`](Self::start) cancels the idle timer and arms the linger timer,
/// [`run`](Self::run) moves the close on and closes the handler once it is done.
#[derive(Debug)]
pub struct Closing {
    state: LingerState,
    timer: TimerId,
}

impl Closing {
    /// Starts closing: disarms `idle` (the service's idle timer, if any) and arms `after`.
    pub fn start(cx: &mut Context<'_>, after: Duration, idle: Option<TimerId>) -> Self {
        if let Some(id) = idle {
            cx.cancel_timer(id);
        }
        Closing {
            state: LingerState::new(),
            timer: cx.set_timer(after),
        }
    }

    /// `true` if `timer` is this close's own (it ran out: close now).
    pub fn is_timer(&self, timer: TimerId) -> bool {
        self.timer == timer
    }

    /// One step of [`LingerState::step`]; closes the handler when the peer's end of stream was
    /// read or the socket failed.
    pub fn run(
        &mut self,
        stream: &mut Stream,
        owed: &[u8],
        sent: &mut usize,
        cx: &mut Context<'_>,
    ) {
        match self.state.step(stream, owed, sent, cx) {
            Ok(false) => {}
            Ok(true) | Err(_) => cx.close(),
        }
    }
}

/// A connection closing lingering, as a handler of its own (for a stream nobody else serves,
/// such as a connection the acceptor refuses): the steps of [`LingerState`], bounded by its
/// own timer.
pub struct Linger {
    stream: Stream,
    owed: Vec<u8>,
    sent: usize,
    state: LingerState,
    after: Duration,
    timer: Option<TimerId>,
    _guard: Option<ConnGuard>,
}

impl Linger {
    /// Closes `stream` lingering: writes `owed` first, then ends its side; at most `after`.
    pub fn new(stream: Stream, owed: Vec<u8>, after: Duration) -> Self {
        Linger {
            stream,
            owed,
            sent: 0,
            state: LingerState::new(),
            after,
            timer: None,
            _guard: None,
        }
    }

    /// Holds `guard` (a connection-limit slot) until the close completes.
    pub fn with_guard(mut self, guard: ConnGuard) -> Self {
        self._guard = Some(guard);
        self
    }

    fn run(&mut self, cx: &mut Context<'_>) {
        match self
            .state
            .step(&mut self.stream, &self.owed, &mut self.sent, cx)
        {
            Ok(false) => {}
            Ok(true) | Err(_) => cx.close(),
        }
    }
}

impl EventHandler for Linger {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.stream, Interest::READABLE | Interest::WRITABLE)?;
        self.timer = Some(cx.set_timer(self.after));
        self.run(cx);
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.run(cx);
    }

    fn timeout(&mut self, _: TimerId, cx: &mut Context<'_>) {
        cx.close(); // the peer did not end its stream in time
    }

    /// Already closing, and bounded by its own timer: nothing to add.
    fn drain(&mut self, _: &mut Context<'_>) {}

    /// Already closing: it keeps its own (short) time.
    fn force(&mut self, _: &mut Context<'_>) {}
}

impl std::fmt::Debug for Linger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linger")
            .field("owed", &(self.owed.len() - self.sent))
            .field("discarded", &self.state.discarded())
            .field("after", &self.after)
            .finish()
    }
}
