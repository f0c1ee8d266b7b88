//! Question: what does an Active Object call cost against the raw channel request/reply pair a
//! user would write instead? One call = send a method request to the servant's thread, run it,
//! wait for the answer. posa `Proxy::call` + token wait vs a crossbeam `bounded(1)` request
//! channel carrying a `bounded(1)` reply sender, to a thread that owns a counter.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use posa::active::ActiveObject;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("active_object/call_round_trip");

    let ao = ActiveObject::spawn(0u64).expect("active object");
    let proxy = ao.proxy();
    g.bench_function("posa_active_object", |b| {
        b.iter(|| {
            black_box(
                proxy
                    .call(|n: &mut u64| {
                        *n += 1;
                        *n
                    })
                    .expect("open")
                    .wait(),
            )
        })
    });

    type Reply = crossbeam_channel::Sender<u64>;
    let (req_tx, req_rx) = crossbeam_channel::bounded::<Reply>(1);
    let server = std::thread::spawn(move || {
        let mut n = 0u64;
        for reply in req_rx {
            n += 1;
            let _ = reply.send(n);
        }
    });
    g.bench_function("crossbeam_request_reply", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            req_tx.send(tx).expect("server up");
            black_box(rx.recv().expect("reply"))
        })
    });
    g.finish();
    drop(req_tx);
    server.join().expect("server");
    black_box(ao.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
