//! The pool a user writes in ten lines: an unbounded crossbeam channel and N threads. The
//! peer of posa's pool in `pools.rs` and `ratios.rs` (shared by `#[path]`).

pub type BoxedJob = Box<dyn FnOnce() + Send>;

/// The pool a user writes in ten lines: an unbounded crossbeam channel and two threads.
pub struct ChannelPool {
    tx: Option<crossbeam_channel::Sender<BoxedJob>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl ChannelPool {
    pub fn new(threads: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<BoxedJob>();
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        Self {
            tx: Some(tx),
            workers,
        }
    }
    pub fn send(&self, job: BoxedJob) {
        self.tx
            .as_ref()
            .expect("open")
            .send(job)
            .expect("workers up");
    }
}

impl Drop for ChannelPool {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            w.join().expect("worker");
        }
    }
}
