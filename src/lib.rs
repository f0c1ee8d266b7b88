//! # posa
//!
//! The concurrency patterns of *Pattern-Oriented Software Architecture, Vol. 2* as a small,
//! measured, loom-verified runtime. Each pattern has one module; layers import only downward
//! (`docs/architecture.md` draws them and says why):
//!
//! | module | pattern |
//! |---|---|
//! | [`server`] | wiring only: a [`Server`](server::Server) that runs a service on the threading model you choose |
//! | [`watch`] | a file watcher (inotify) with `tail -F` semantics, on a reactor or a proactor |
//! | [`half_sync`] | Half-Sync/Half-Async: reactor I/O, a pool of synchronous workers, in-order replies |
//! | [`proactor`] | Proactor: asynchronous operations the loop completes, with completion tokens |
//! | [`net`] | Acceptor-Connector: listeners, streams, the acceptor, the connector, connection limits |
//! | [`reactor`] | Reactor on mio: handlers, timers, a cross-thread handle, two-phase shutdown; [`reactor::leader_followers`]: Leader/Followers |
//! | [`active`] | Active Object: proxy, bounded priority activation list with guards, servant thread |
//! | [`pool`] | Thread Pool with schedulers: work stealing, FIFO, LIFO, priority with aging, earliest deadline |
//! | [`intercept`] | Interceptor: a chain at every dispatch point, and ready-made tracing, metrics, rate limit, bulkhead, circuit breaker, deadline, causal stamps |
//! | [`act`] | Asynchronous Completion Token: wait, poll, await, time out, cancel, call back, wait-any |
//! | [`monitor`] | Monitor Object, bounded blocking queue, Scoped/Strategized/Thread-Safe-Interface/Double-Checked locking, re-entrant and reader-writer locks |
//! | [`tss`] | Thread-Specific Storage, contention-free counters and latency histograms |
//! | [`clock`] | Lamport and hybrid logical clocks, and the `Clock` time policy |
//! | [`error`] | the error family: [`Refused`] (the item comes back), [`RunError`], [`Rejection`](error::Rejection) |
//! | [`sync`] | the one door to synchronization types (std/parking_lot, or loom under `--cfg posa_loom`) |
//!
//! ```
//! use posa::pool::ThreadPool;
//!
//! let pool = ThreadPool::new(2)?;
//! let token = pool.submit(|| 6 * 7).unwrap();  // an Asynchronous Completion Token
//! assert_eq!(token.wait().into_result().unwrap(), 42);
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(missing_docs)]
// The sync shim is the only door to synchronization types (see `sync` and clippy.toml):
// checked where the shim is loom's, so every std type left is a bypass.
#![cfg_attr(
    posa_loom,
    deny(
        clippy::disallowed_types,
        clippy::disallowed_methods,
        clippy::disallowed_macros
    )
)]
#![warn(rust_2018_idioms, unreachable_pub)]

pub mod act;
pub mod active;
pub mod clock;
pub mod error;
pub mod half_sync;
pub mod intercept;

pub mod monitor;
pub mod net;
pub mod pool;
pub mod proactor;
pub mod reactor;
pub mod server;
pub mod sync;
pub mod tss;
pub mod watch;

pub use error::{Refused, RunError};

/// The message of a caught panic's payload (`&str` or `String`), for error values and logs.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The pattern pages in `docs/` are compiled and run as doc tests, so their examples stay true.
#[cfg(doctest)]
mod doc_pages {
    #[doc = include_str!("../docs/act.md")]
    struct Act;
    #[doc = include_str!("../docs/monitor.md")]
    struct Monitor;
    #[doc = include_str!("../docs/tss.md")]
    struct Tss;
    #[doc = include_str!("../docs/clock.md")]
    struct Clock;
    #[doc = include_str!("../docs/reactor.md")]
    struct Reactor;
    #[doc = include_str!("../docs/net.md")]
    struct Net;
    #[doc = include_str!("../docs/service.md")]
    struct Service;
    #[doc = include_str!("../docs/leader-followers.md")]
    struct LeaderFollowers;
    #[doc = include_str!("../docs/thread-pool.md")]
    struct ThreadPool;
    #[doc = include_str!("../docs/active-object.md")]
    struct ActiveObject;
    #[doc = include_str!("../docs/half-sync.md")]
    struct HalfSync;
    #[doc = include_str!("../docs/proactor.md")]
    struct Proactor;
    #[doc = include_str!("../docs/watch.md")]
    struct Watch;
    #[doc = include_str!("../docs/reactor-vs-proactor.md")]
    struct ReactorVsProactor;
    #[doc = include_str!("../docs/interceptor.md")]
    struct Interceptor;
    #[doc = include_str!("../README.md")]
    struct Readme;
}

/// Helpers shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod test_support {
    /// Threads of this process whose name starts with `prefix` (from `/proc/self/task`).
    pub(crate) fn threads_named(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .filter(|name| name.starts_with(prefix))
                    .count()
            })
            .unwrap_or(0)
    }
}
