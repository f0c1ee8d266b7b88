//! What a Leader/Followers leader waits on: the demultiplexer, behind a small trait. mio cannot
//! run under loom (its poll blocks the one OS thread loom runs every model thread on), so the
//! loom models in `loom-tests/tests/leader_followers.rs` give the production hand-off a fake
//! that returns scripted events; production uses [`MioDemux`], one `mio::Poll`.
//!
//! Public only in a `--cfg posa_loom` build.
#![cfg_attr(not(posa_loom), allow(unreachable_pub))]

use std::io;
use std::time::Duration;

use mio::{Events, Poll};

use super::{HandlerId, Readiness, turn};

/// A demultiplexer as a leader uses it: wait, then hand over what is ready.
pub trait Demux: Send {
    /// Waits at most `timeout` (`None`: until something happens) for readiness; appends the
    /// handlers' events to `ready`; returns whether the loop's own waker fired (jobs were
    /// posted, or shutdown began). An interrupted wait is a wait with no events.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<(HandlerId, Readiness)>,
    ) -> io::Result<bool>;
}

/// The production demultiplexer: one `mio::Poll` and its event buffer.
pub(super) struct MioDemux {
    pub(super) poll: Poll,
    pub(super) events: Events,
}

impl Demux for MioDemux {
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<(HandlerId, Readiness)>,
    ) -> io::Result<bool> {
        turn::poll_ready(&mut self.poll, &mut self.events, timeout, ready)
    }
}
