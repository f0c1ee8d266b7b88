//! Leader/Followers specifics on loopback: re-run work (`call_again`) must not wait behind a
//! leader asleep in poll.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use posa::net::{Acceptor, Addr, ConnLimit, ConnStats, Listener};
use posa::reactor::LeaderFollowers;
use posa::server::{ConnConfig, EchoService, ServiceConnFactory};

#[test]
fn budget_limited_acceptor_is_rerun_while_another_thread_leads() {
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    let stats = Arc::new(ConnStats::default());
    let factory = ServiceConnFactory::new(
        Arc::new(EchoService),
        ConnConfig::default(),
        Arc::clone(&stats),
    );
    // One accept per dispatch: every further accept is re-run work.
    let acceptor = Acceptor::new(listener, factory, ConnLimit::new(100)).budget(1);
    let pool = LeaderFollowers::new(2).unwrap();
    pool.add(acceptor).unwrap();
    let handle = pool.handle();
    let runner = std::thread::spawn(move || pool.run());

    // All connect at once (one readable edge on the listener), then talk one at a time: a
    // connection not yet accepted produces no event, so only the re-run can accept it.
    let mut clients: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("client {i}");
        c.write_all(msg.as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).expect("served, not stranded");
        assert_eq!(back, msg);
    }
    let report = handle
        .shutdown(Duration::from_secs(5))
        .wait()
        .into_result()
        .unwrap();
    assert_eq!(runner.join().unwrap().unwrap(), report);
    assert_eq!(stats.closed.sum(), 20);
}

/// Asks to be re-run a few times from a timer; registers no source, so nothing else wakes a
/// sleeping leader: only a thread that runs its own re-runs makes progress.
struct Rerun {
    left: u32,
}

impl posa::reactor::EventHandler for Rerun {
    fn open(&mut self, cx: &mut posa::reactor::Context<'_>) -> std::io::Result<()> {
        cx.set_timer(Duration::from_millis(1));
        Ok(())
    }
    fn ready(&mut self, r: posa::reactor::Readiness, cx: &mut posa::reactor::Context<'_>) {
        self.left -= 1;
        if self.left == 0 {
            drop(cx.handle().shutdown(Duration::from_secs(1)));
        } else {
            cx.call_again(r);
        }
    }
    fn timeout(&mut self, _: posa::reactor::TimerId, cx: &mut posa::reactor::Context<'_>) {
        cx.call_again(posa::reactor::Readiness::default());
    }
}

#[test]
fn rerun_work_runs_even_when_the_other_thread_sleeps_as_leader() {
    let pool = LeaderFollowers::new(2).unwrap();
    pool.add(Rerun { left: 5 }).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pool.run());
    });
    // Bounded wait: a stranded re-run shows as a pool that never stops.
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("re-run work was stranded behind a sleeping leader")
        .unwrap();
    assert_eq!(report.drained, 1);
}

/// Re-runs asked for while opening, before the pool runs, must not be lost.
struct EagerRerun;

impl posa::reactor::EventHandler for EagerRerun {
    fn open(&mut self, cx: &mut posa::reactor::Context<'_>) -> std::io::Result<()> {
        cx.call_again(posa::reactor::Readiness::default());
        Ok(())
    }
    fn ready(&mut self, _: posa::reactor::Readiness, cx: &mut posa::reactor::Context<'_>) {
        drop(cx.handle().shutdown(Duration::from_secs(1)));
    }
}

#[test]
fn a_rerun_asked_for_before_run_is_kept() {
    let pool = LeaderFollowers::new(2).unwrap();
    pool.add(EagerRerun).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pool.run());
    });
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the early re-run was lost")
        .unwrap();
    assert_eq!(report.drained, 1);
}
