//! Each ready-made interceptor at its real dispatch points: rejections reach the caller as
//! typed errors, time-driven behaviour runs on a `ManualClock`.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use posa::act::Outcome;
use posa::active::ActiveObject;
use posa::clock::ManualClock;
use posa::intercept::{
    BreakerState, Bulkhead, Causal, CircuitBreaker, Deadline, Metrics, RateLimit,
};
use posa::intercept::{Chain, Dispatch, Ended, Interceptor, Point, Reason};
use posa::net::{Addr, ConnectError, ConnectOptions, connect};
use posa::pool::{JobOptions, ThreadPool};
use posa::reactor::Reactor;
use posa::server::{Model, Server, ServerConfig};
use posa::{Refused, RunError};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new())
}

/// A one-worker pool whose worker is held until `release` is sent.
fn held_pool(chain: Chain) -> (ThreadPool, mpsc::Sender<()>) {
    let pool = ThreadPool::builder()
        .threads(1)
        .interceptors(chain)
        .build()
        .unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    pool.submit(move || {
        started_tx.send(()).unwrap();
        gate.recv().unwrap();
    })
    .unwrap()
    .detach();
    started.recv().unwrap();
    (pool, release)
}

#[test]
fn rate_limit_at_pool_submit_hands_the_job_back_and_refills_with_time() {
    let c = clock();
    let limit = RateLimit::global(1.0, 2).clock(c.clone());
    let pool = ThreadPool::builder()
        .threads(1)
        .interceptors(Chain::new().with(limit))
        .build()
        .unwrap();
    let a = pool.submit(|| 1).unwrap();
    let b = pool.submit(|| 2).unwrap();
    match pool.submit(|| 3) {
        Err(Refused::Rejected(job, r)) => {
            assert_eq!(r.reason, Reason::RateLimited);
            assert_eq!(job(), 3, "the job comes back");
        }
        other => panic!("expected a rate-limit rejection, got {other:?}"),
    }
    c.advance(Duration::from_secs(1)); // one token back
    let d = pool.submit(|| 4).unwrap();
    assert!(matches!(pool.submit(|| 5), Err(Refused::Rejected(..))));
    for (t, v) in [(a, 1), (b, 2), (d, 4)] {
        assert_eq!(t.wait().into_result().unwrap(), v);
    }
    assert_eq!(pool.stats().rejected, 2);
}

#[test]
fn per_peer_buckets_are_separate_and_bounded() {
    let c = clock();
    let limit = RateLimit::per_peer(0.0, 1).max_peers(2).clock(c.clone());
    let ip = |n: u8| Some(std::net::IpAddr::from([10, 0, 0, n]));
    assert!(limit.try_acquire(ip(1)));
    assert!(!limit.try_acquire(ip(1)), "peer 1 spent its burst");
    assert!(limit.try_acquire(ip(2)), "peer 2 has its own bucket");
    // A third peer when the table is full and nobody is idle: the shared global bucket.
    assert!(limit.try_acquire(ip(3)));
    assert!(
        !limit.try_acquire(ip(4)),
        "the overflow bucket is spent too"
    );
}

#[test]
fn deadline_refuses_pool_jobs_that_waited_too_long() {
    let c = clock();
    let chain = Chain::new().with(
        Deadline::new()
            .max_wait(Duration::from_millis(10))
            .clock(c.clone()),
    );
    let (pool, release) = held_pool(chain);
    let late = pool.submit(|| "ran").unwrap();
    let past = std::time::Instant::now() - Duration::from_secs(1);
    let with_deadline = pool
        .submit_with(JobOptions::deadline(past), || "ran")
        .unwrap();
    // Jobs are stamped on the real clock, which started after the manual one; a minute of
    // manual time is far more than the 10 ms allowed plus any setup time.
    c.advance(Duration::from_secs(60));
    release.send(()).unwrap();
    assert_eq!(
        late.wait(),
        Outcome::Completed(Err(RunError::DeadlineExceeded))
    );
    assert_eq!(
        with_deadline.wait(),
        Outcome::Completed(Err(RunError::DeadlineExceeded))
    );
}

#[test]
fn deadline_lets_a_job_that_did_not_wait_run() {
    let chain = Chain::new().with(Deadline::new().max_wait(Duration::from_secs(3600)));
    let pool = ThreadPool::builder()
        .threads(1)
        .interceptors(chain)
        .build()
        .unwrap();
    assert_eq!(pool.submit(|| 7).unwrap().wait().into_result().unwrap(), 7);
}

#[test]
fn deadline_refuses_method_requests_that_waited_too_long() {
    let c = clock();
    let chain = Chain::new().with(
        Deadline::new()
            .max_wait(Duration::from_millis(5))
            .clock(c.clone()),
    );
    let ao = ActiveObject::with_interceptors(0u32, 16, chain).unwrap();
    let proxy = ao.proxy();
    let (release, gate) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let busy = proxy
        .call(move |_| {
            started_tx.send(()).unwrap();
            gate.recv().unwrap();
        })
        .unwrap();
    started.recv().unwrap();
    let late = proxy.call(|n| *n += 1).unwrap();
    c.advance(Duration::from_secs(60)); // see the pool test: far past 5 ms plus setup
    release.send(()).unwrap();
    busy.wait().into_result().unwrap();
    assert_eq!(
        late.wait(),
        Outcome::Completed(Err(RunError::DeadlineExceeded))
    );
    assert_eq!(
        ao.shutdown(),
        0,
        "the late request never touched the servant"
    );
}

#[test]
fn bulkhead_caps_jobs_in_flight_and_gives_places_back() {
    let bulkhead = Arc::new(Bulkhead::new(1).at(&[Point::PoolJob]));
    let chain = Chain::new().with_shared(bulkhead.clone());
    let pool = ThreadPool::builder()
        .threads(2)
        .interceptors(chain)
        .build()
        .unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let first = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            gate.recv().unwrap();
        })
        .unwrap();
    started.recv().unwrap();
    assert_eq!(bulkhead.in_flight(), 1);
    // The second worker is free, but the bulkhead is full.
    match pool.submit(|| ()).unwrap().wait() {
        Outcome::Completed(Err(RunError::Rejected(r))) => assert_eq!(r.reason, Reason::Overloaded),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    release.send(()).unwrap();
    first.wait().into_result().unwrap();
    pool.submit(|| ()).unwrap().wait().into_result().unwrap();
    assert_eq!(bulkhead.in_flight(), 0, "every place given back");
}

#[test]
fn circuit_breaker_state_machine_on_a_fake_clock() {
    let c = clock();
    let b = CircuitBreaker::new(4, 0.6, Duration::from_secs(10)).clock(c.clone());
    let d = Dispatch::new(Point::Connect, 0);
    let attempt = |ok: bool| -> Result<(), Reason> {
        b.before(&d).map_err(|r| r.reason)?;
        b.after(
            &d,
            if ok { Ended::Ok } else { Ended::Error },
            Duration::ZERO,
        );
        Ok(())
    };
    assert_eq!(attempt(true), Ok(()));
    assert_eq!(attempt(false), Ok(()));
    assert_eq!(b.state(), BreakerState::Closed, "1 of 2 failed: 50% < 60%");
    assert_eq!(attempt(false), Ok(()));
    assert_eq!(b.state(), BreakerState::Open, "2 of 3 failed");
    assert_eq!(attempt(true), Err(Reason::CircuitOpen), "fails fast");
    c.advance(Duration::from_secs(10));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // One probe at a time.
    b.before(&d).unwrap();
    assert_eq!(b.before(&d).map_err(|r| r.reason), Err(Reason::CircuitOpen));
    b.after(&d, Ended::Error, Duration::ZERO);
    assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens");
    c.advance(Duration::from_secs(10));
    assert_eq!(attempt(true), Ok(()));
    assert_eq!(b.state(), BreakerState::Closed, "a good probe closes");
}

#[test]
fn the_connector_fails_fast_while_the_breaker_is_open() {
    let c = clock();
    let breaker = Arc::new(
        CircuitBreaker::new(2, 0.5, Duration::from_secs(30))
            .min_samples(2)
            .clock(c.clone()),
    );
    // A port with nothing listening: connects are refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let runner = std::thread::spawn(move || reactor.run());
    let options = ConnectOptions {
        attempts: 1,
        interceptors: Chain::new().with_shared(breaker.clone()),
        ..ConnectOptions::default()
    };
    for _ in 0..2 {
        let r = connect(&handle, Addr::Tcp(addr), options.clone()).wait();
        assert!(
            matches!(r, Outcome::Completed(Err(ConnectError::Failed { .. }))),
            "{r:?}"
        );
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    match connect(&handle, Addr::Tcp(addr), options.clone()).wait() {
        Outcome::Completed(Err(ConnectError::Rejected { rejection, .. })) => {
            assert_eq!(rejection.reason, Reason::CircuitOpen)
        }
        other => panic!("expected a fast failure, got {other:?}"),
    }
    // The peer comes back; after the cool-down the probe connects and closes the circuit.
    let listener = std::net::TcpListener::bind(addr).unwrap();
    c.advance(Duration::from_secs(30));
    let ok = connect(&handle, Addr::Tcp(addr), options).wait();
    assert!(ok.is_completed() && ok.into_result().is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);
    drop(listener);
    drop(handle.shutdown(Duration::ZERO));
    runner.join().unwrap().unwrap();
}

#[test]
fn a_rate_limited_accept_closes_the_connection_and_is_counted() {
    let c = clock();
    let limit = RateLimit::per_peer(0.0, 1)
        .clock(c.clone())
        .at(&[Point::Accept]);
    let metrics = Arc::new(Metrics::new());
    let server = Server::start(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        model: Model::Reactor,
        interceptors: Chain::new().with_shared(metrics.clone()).with(limit),
        ..ServerConfig::default()
    })
    .unwrap();
    let Addr::Tcp(addr) = server.local_addr().clone() else {
        unreachable!()
    };
    let mut first = std::net::TcpStream::connect(addr).unwrap();
    let mut second = std::net::TcpStream::connect(addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(second.read(&mut buf).unwrap_or(0), 0, "refused: closed");
    std::io::Write::write_all(&mut first, b"x").unwrap();
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"x", "the first is served");
    let accepts = server.accept_stats();
    server.shutdown(Duration::from_secs(1));
    server.join().unwrap();
    assert_eq!(
        accepts
            .rejected_intercept
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let snap = metrics.snapshot();
    assert_eq!(snap.point(Point::Accept).ok, 1);
    assert_eq!(
        snap.point(Point::Accept).rejected,
        1,
        "metrics sits before the limit"
    );
    assert!(snap.point(Point::ReactorEvent).ok > 0);
}

#[test]
fn causal_stamps_order_a_job_before_the_job_it_submits() {
    let pool = Arc::new(
        ThreadPool::builder()
            .threads(2)
            .interceptors(Chain::new().with(Causal::new()))
            .build()
            .unwrap(),
    );
    let p = Arc::clone(&pool);
    let outer = pool
        .submit(move || {
            let mine = Causal::current().expect("stamped");
            let child = p.submit(|| Causal::current().expect("stamped")).unwrap();
            (mine, child.wait().into_result().unwrap())
        })
        .unwrap();
    let (parent, child) = outer.wait().into_result().unwrap();
    assert!(parent < child, "{parent} happened before {child}");
}
