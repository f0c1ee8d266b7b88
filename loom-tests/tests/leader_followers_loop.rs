//! loom models of the production Leader/Followers loop (`LeaderFollowers::run`, its `worker`:
//! take leadership, wait, promote a follower, dispatch, re-runs, drain, shutdown), on loom
//! threads, with the demultiplexer replaced by a fake that hands out scripted events
//! (`FakeDemux`, through the pool's `Demux` trait) and the mailbox's waker by a flag the fake
//! reads (`FakeNotify`). mio itself cannot run under loom; everything around it here is the
//! code production runs.
//!
//! Every model checks that no handler ever runs on two threads at once, that every scripted
//! event and every requested re-run reaches its handler, and that the pool stops with the
//! report it should. Bite-checked by hand: a worker that dispatches without the handler's
//! `SerialCell` (two threads in one handler), a promotion that forgets to wake the next leader
//! after shutdown, and a drain that counts nothing each fail a model (see
//! docs/verification.md).
#![cfg(posa_loom)]

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use posa::clock::{SharedClock, SystemClock};
use posa::reactor::HandlerId;
use posa::reactor::{
    Config, Context, Demux, EventHandler, LeaderFollowers, Notify, Readiness, ShutdownReport,
};
use posa::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use posa::sync::{Arc, Mutex, thread};

/// Waits in a row with nothing to hand out, after which the leader is taken to wait for ever.
const MAX_IDLE_WAITS: usize = 1_000;

#[derive(Default)]
struct Script {
    events: VecDeque<(HandlerId, Readiness)>,
    woken: bool,
}

/// The demultiplexer: scripted events, and the mailbox's wake-ups.
struct FakeDemux(Arc<Mutex<Script>>);

impl Demux for FakeDemux {
    /// Hands out what is scripted (and whether the waker fired); otherwise waits, spinning with
    /// `yield_now` (loom reads it as "waits for another thread"). loom has no time: a timeout
    /// other than zero waits like none.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<(HandlerId, Readiness)>,
    ) -> io::Result<bool> {
        for _ in 0..MAX_IDLE_WAITS {
            {
                let mut s = self.0.lock();
                if !s.events.is_empty() || s.woken {
                    ready.extend(s.events.drain(..));
                    return Ok(std::mem::take(&mut s.woken));
                }
            }
            if timeout == Some(Duration::ZERO) {
                return Ok(false);
            }
            loom::thread::yield_now();
        }
        panic!("the leader waits for an event that never comes (a lost wake-up)");
    }
}

/// The mailbox's waker: raises the flag the fake demultiplexer reports.
struct FakeNotify(Arc<Mutex<Script>>);

impl Notify for FakeNotify {
    fn notify(&self) -> io::Result<()> {
        self.0.lock().woken = true;
        Ok(())
    }
}

fn pool(threads: usize) -> (LeaderFollowers, Arc<Mutex<Script>>) {
    let script = Arc::new(Mutex::new(Script::default()));
    let clock: SharedClock = posa::clock::shared(SystemClock);
    let config = Config {
        stall_threshold: None,
        ..Config::default()
    };
    let lf = LeaderFollowers::with_demux(
        threads,
        config,
        clock,
        Box::new(FakeDemux(Arc::clone(&script))),
        Box::new(FakeNotify(Arc::clone(&script))),
    )
    .expect("pool");
    (lf, script)
}

/// loom with the branch limit raised: a turn of the pool is a few hundred loom operations.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new(); // reads LOOM_MAX_PREEMPTIONS
    builder.max_branches = 100_000;
    builder.check(f);
}

fn readable() -> Readiness {
    Readiness {
        readable: true,
        ..Readiness::default()
    }
}

/// Counts its upcalls, fails the model if two threads are ever inside it, asks for one re-run
/// on its first upcall if told to, and shuts the pool down once it has seen `stop_after`.
struct Probe {
    inside: Arc<AtomicBool>,
    seen: Arc<AtomicUsize>,
    rerun_first: bool,
    stop_after: usize,
}

impl Probe {
    fn new(stop_after: usize, rerun_first: bool) -> (Self, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        (
            Probe {
                inside: Arc::new(AtomicBool::new(false)),
                seen: Arc::clone(&seen),
                rerun_first,
                stop_after,
            },
            seen,
        )
    }
}

impl EventHandler for Probe {
    fn open(&mut self, _: &mut Context<'_>) -> io::Result<()> {
        Ok(())
    }

    fn ready(&mut self, readiness: Readiness, cx: &mut Context<'_>) {
        assert!(
            !self.inside.swap(true, SeqCst),
            "a handler ran on two threads at once"
        );
        let n = self.seen.fetch_add(1, SeqCst) + 1;
        if n == 1 && self.rerun_first {
            cx.call_again(readiness);
        }
        if n == self.stop_after {
            // A grace loom never reaches (it has no time): the probe drains on its own.
            drop(cx.handle().shutdown(Duration::from_secs(60)));
        }
        self.inside.store(false, SeqCst);
    }
}

/// Two threads; one event scripted before the run, one arriving while the threads take turns
/// (during a promotion, or while the first is dispatched): both reach the handler, one at a
/// time; the handler's shutdown stops both threads, and it drains.
#[test]
fn two_threads_deliver_every_event_serially_and_stop() {
    model(|| {
        let (lf, script) = pool(2);
        let (probe, seen) = Probe::new(2, false);
        let id = lf.add(probe).unwrap();
        script.lock().events.push_back((id, readable()));
        let feeder = {
            let script = Arc::clone(&script);
            thread::spawn(move || script.lock().events.push_back((id, readable())))
        };
        let report = lf.run().unwrap();
        feeder.join().unwrap();
        assert_eq!(seen.load(SeqCst), 2, "every event delivered");
        assert_eq!(
            report,
            ShutdownReport {
                drained: 1,
                forced: 0,
                jobs_dropped: 0
            }
        );
    });
}

/// A re-run asked for (`call_again`) while another thread may take the next event for the same
/// handler: the re-run and the event both run, never at once.
#[test]
fn a_rerun_and_an_event_for_one_handler_both_run_serially() {
    model(|| {
        let (lf, script) = pool(2);
        let (probe, seen) = Probe::new(3, true);
        let id = lf.add(probe).unwrap();
        {
            let mut s = script.lock();
            s.events.push_back((id, readable()));
        }
        let feeder = {
            let script = Arc::clone(&script);
            thread::spawn(move || script.lock().events.push_back((id, readable())))
        };
        lf.run().unwrap();
        feeder.join().unwrap();
        assert_eq!(seen.load(SeqCst), 3, "event, re-run, event");
    });
}

/// Shutdown from another thread while the leader waits and the other thread follows (waits
/// for leadership): both stop, and every handler is counted once, drained or forced; one
/// that never closes on drain is forced at the (zero) deadline. (This model found two bugs in
/// the first version of the deadline: a pool that hung with its leader asleep after the
/// forcing, and a handler closing at the deadline counted neither drained nor forced.)
#[test]
fn shutdown_while_a_follower_waits_stops_every_thread() {
    struct Stubborn;
    impl EventHandler for Stubborn {
        fn open(&mut self, _: &mut Context<'_>) -> io::Result<()> {
            Ok(())
        }
        fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
        fn drain(&mut self, _: &mut Context<'_>) {} // finishes only when forced
    }
    model(|| {
        let (lf, _script) = pool(2);
        let (probe, seen) = Probe::new(usize::MAX, false);
        lf.add(probe).unwrap();
        lf.add(Stubborn).unwrap();
        let stopper = {
            let handle = lf.handle();
            thread::spawn(move || drop(handle.shutdown(Duration::ZERO)))
        };
        let report = lf.run().unwrap();
        stopper.join().unwrap();
        assert_eq!(seen.load(SeqCst), 0);
        // The grace is zero, so the deadline may come before the probe's drain does: each
        // handler is counted exactly once, and the stubborn one is always forced.
        assert_eq!(report.drained + report.forced, 2, "{report:?}");
        assert!(report.forced >= 1, "the stubborn one is forced: {report:?}");
    });
}

/// Three threads take turns on one demultiplexer: events scripted before and during the run
/// reach the handler one at a time, and the pool stops on the handler's shutdown.
#[test]
fn three_threads_take_turns_without_running_a_handler_twice() {
    model(|| {
        let (lf, script) = pool(3);
        let (probe, seen) = Probe::new(2, false);
        let id = lf.add(probe).unwrap();
        script.lock().events.push_back((id, readable()));
        script.lock().events.push_back((id, readable()));
        lf.run().unwrap();
        assert_eq!(seen.load(SeqCst), 2);
    });
}
