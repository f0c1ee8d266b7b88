//! The completion token as a `std::future::Future` under real executors: tokio (multi-thread
//! and current-thread) and a minimal `block_on`, with completions coming from plain threads.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use posa::act::{self, Outcome};

/// The smallest correct executor: park the thread until the waker unparks it.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

#[test]
fn block_on_awaits_a_token_completed_by_another_thread() {
    let (completer, token) = act::pair::<u64, ()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let producer = thread::spawn(move || {
        go_rx.recv().unwrap(); // complete only after the first poll registered a waker
        completer.complete(Ok(99));
    });
    let out = block_on(async move {
        let mut token = token;
        let first_pending =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut token).poll(cx).is_pending()))
                .await;
        assert!(first_pending, "nothing completed yet");
        go_tx.send(()).unwrap();
        token.await
    });
    assert_eq!(out, Outcome::Completed(Ok(99)));
    producer.join().unwrap();
}

#[test]
fn tokio_multi_thread_awaits_many_tokens() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut producers = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..64u64 {
        let (c, t) = act::pair::<u64, ()>();
        tokens.push(t);
        producers.push(thread::spawn(move || c.complete(Ok(i * i))));
    }
    let sum = rt.block_on(async move {
        let handles: Vec<_> = tokens
            .into_iter()
            .map(|t| tokio::spawn(async move { t.await.into_result().unwrap() }))
            .collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..64u64).map(|i| i * i).sum::<u64>());
    for p in producers {
        p.join().unwrap();
    }
}

#[test]
fn tokio_timeout_drops_the_token_which_requests_cancellation() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (completer, token) = act::pair::<u8, ()>();
    let timed_out = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(1), token)
            .await
            .is_err()
    });
    assert!(timed_out);
    assert!(
        completer.is_cancelled(),
        "a dropped future must signal cancellation"
    );
}

#[test]
fn tokio_select_on_two_tokens_takes_the_completed_one() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (slow, slow_token) = act::pair::<&str, ()>();
    let (fast, fast_token) = act::pair::<&str, ()>();
    fast.complete(Ok("fast"));
    let winner = rt.block_on(async {
        tokio::select! {
            o = slow_token => o,
            o = fast_token => o,
        }
    });
    assert_eq!(winner, Outcome::Completed(Ok("fast")));
    assert!(slow.is_cancelled(), "the losing branch's token was dropped");
}
