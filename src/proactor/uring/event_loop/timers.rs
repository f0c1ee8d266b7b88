//! Timers (the loop's timer queue drives the wait timeout) and positioned file reads
//! (`IORING_OP_READ`) on io_uring.

#[allow(clippy::wildcard_imports)]
use super::*;

impl RingLoop {
    // ---- timers and file reads ------------------------------------------------------------

    pub(super) fn progress_timers(&mut self) {
        let parts = &self.rings.loops[self.index];
        parts.timer_waker.taken();
        let waker = LoopWaker::Ring(parts.timer_waker.clone());
        let open = parts.timers.take(&waker, &mut self.incoming_timers);
        let draining = self.drain_deadline.is_some() || !open;
        while let Some((after, c)) = self.incoming_timers.pop_front() {
            if draining {
                c.cancel(());
                continue;
            }
            let slot = self.user_timers.vacant_key();
            let id = self
                .timers
                .arm(TimerFor::User(slot), Instant::now() + after);
            self.user_timers.insert((id, c));
        }
        let cancelled: Vec<u64> = self
            .user_timers
            .iter()
            .filter(|(_, (_, c))| draining || c.is_cancelled())
            .map(|(k, _)| k)
            .collect();
        for k in cancelled {
            if let Some((id, c)) = self.user_timers.remove(k) {
                self.timers.cancel(id);
                c.cancel(());
            }
        }
    }

    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((_, what)) = self.timers.poll(now) {
            match what {
                TimerFor::User(k) => {
                    if let Some((_, c)) = self.user_timers.remove(k) {
                        c.complete(Ok(()));
                    }
                }
                TimerFor::Read(conn) => {
                    if let Some(c) = self.conns.get_mut(conn)
                        && let Some(op) = c.read_op
                    {
                        c.read_timer = None;
                        if let Some(f) = self.ops.get_mut(op) {
                            f.timed_out = true;
                        }
                        self.cancel_op(op);
                    }
                }
                TimerFor::ConnectAttempt(k) => {
                    if let Some(c) = self.connects.get_mut(k) {
                        c.timer = None;
                        if let Some(op) = c.op {
                            self.cancel_op(op); // answers TimedOut from its completion
                        }
                    }
                }
                TimerFor::ConnectRetry(k) => {
                    if let Some(c) = self.connects.get_mut(k) {
                        c.timer = None;
                    }
                    self.attempt(k);
                }
                TimerFor::Linger(k) => self.linger_expired(k),
            }
        }
        if let Some(deadline) = self.drain_deadline
            && now >= deadline
            && !self.forcing
        {
            // The grace is over: whatever is left is forced (a graceful close, bounded by the
            // linger time).
            self.forcing = true;
            let conns: Vec<u64> = self.conns.keys().collect();
            tracing::info!(forced = conns.len(), "posa io_uring: drain deadline");
            self.dirty.extend(conns.into_iter().map(Key::Conn));
        }
    }

    pub(in crate::proactor::uring) fn add_file_read(
        &mut self,
        file: Arc<File>,
        offset: u64,
        mut buf: Vec<u8>,
        c: OpCompleter,
    ) {
        if c.is_cancelled() || self.drain_deadline.is_some() {
            return self.delivery.stop(c, buf, 0, io::ErrorKind::Interrupted);
        }
        let sqe = opcode::Read::new(
            sys::fd(file.as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len() as u32,
        )
        .offset(offset)
        .build();
        let key = self.submit(
            sqe,
            Entry::File {
                _file: file,
                buf,
                c,
            },
        );
        self.files.push(key);
    }

    pub(super) fn progress_files(&mut self) {
        self.rings.loops[self.index].file_waker.taken();
        let cancelled: Vec<u64> = self
            .files
            .iter()
            .copied()
            .filter(|&k| {
                self.ops.get(k).is_some_and(|f| match &f.entry {
                    Entry::File { c, .. } => c.is_cancelled(),
                    _ => false,
                })
            })
            .collect();
        for k in cancelled {
            self.cancel_op(k);
        }
    }
}
