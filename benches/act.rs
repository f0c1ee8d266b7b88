//! Question: what does a completion token cost against a one-slot channel used as a reply?
//! posa `act` token vs crossbeam `bounded(1)`: on one thread (pure overhead), and as the reply
//! path of a request served by another thread (the shape of every pool and active object).

use std::hint::black_box;
use std::thread;

use criterion::{Criterion, criterion_group, criterion_main};
use posa::act::{self, Completer};

enum Reply {
    Token(Completer<u64, ()>),
    Channel(crossbeam_channel::Sender<u64>),
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("completion_roundtrip/same_thread");
    g.bench_function("posa_token", |b| {
        b.iter(|| {
            let (completer, token) = act::pair::<u64, ()>();
            completer.complete(Ok(black_box(1)));
            black_box(token.wait())
        })
    });
    g.bench_function("crossbeam_bounded1", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(1);
            tx.send(black_box(1)).expect("open");
            black_box(rx.recv().expect("open"))
        })
    });
    g.finish();

    // One server thread answers requests; only the reply mechanism differs.
    let (req_tx, req_rx) = crossbeam_channel::bounded::<Reply>(1);
    let server = thread::spawn(move || {
        for reply in req_rx {
            match reply {
                Reply::Token(completer) => completer.complete(Ok(7)),
                Reply::Channel(tx) => {
                    let _ = tx.send(7);
                }
            }
        }
    });
    let mut g = c.benchmark_group("completion_roundtrip/cross_thread");
    g.bench_function("posa_token", |b| {
        b.iter(|| {
            let (completer, token) = act::pair::<u64, ()>();
            req_tx.send(Reply::Token(completer)).expect("server up");
            black_box(token.wait())
        })
    });
    g.bench_function("crossbeam_bounded1", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(1);
            req_tx.send(Reply::Channel(tx)).expect("server up");
            black_box(rx.recv().expect("open"))
        })
    });
    g.finish();
    drop(req_tx);
    server.join().expect("server panicked");
}

criterion_group!(benches, bench);
criterion_main!(benches);
