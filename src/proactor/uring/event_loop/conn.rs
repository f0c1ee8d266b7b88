//! The loop's side of a connection on io_uring: one read-side and one write-side operation
//! in flight at a time, each answered from its completion; closing cancels what is in flight
//! and frees the descriptor once nothing is.

#[allow(clippy::wildcard_imports)]
use super::*;

impl RingLoop {
    // ---- connections ----------------------------------------------------------------------

    /// Takes `fd` (a connected socket) as a connection of this loop.
    pub(in crate::proactor::uring) fn add_conn(&mut self, fd: OwnedFd, shared: SharedConn) {
        let key = self.conns.vacant_key();
        let waker = RingWaker::new(Arc::clone(&self.shared), Key::Conn(key));
        let loop_waker = LoopWaker::Ring(waker.clone());
        let inserted = self.conns.insert(RingConn {
            fd,
            shared,
            waker,
            loop_waker,
            ops: LoopOps::default(),
            read_op: None,
            read_timer: None,
            starved: false,
            write_op: None,
            closing: None,
            forced: false,
            linger: None,
        });
        debug_assert_eq!(inserted, key);
        self.dirty.push_back(Key::Conn(key));
    }

    pub(super) fn progress_conn(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.waker.taken();
        let open = c.ops.take(&c.shared, &c.loop_waker);
        // Draining: the connection is served on until its owner closes it (when the peer is
        // done). At the deadline it is forced: closed gracefully, bounded by the linger time.
        let forced = c.closing.is_none() && c.linger.is_none() && self.forcing;
        if forced {
            c.forced = true;
        }
        if (!open || forced) && c.closing.is_none() && c.linger.is_none() {
            self.begin_linger(key);
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.closing.is_some() {
            return self.close_conn(key);
        }
        if c.linger.is_some() {
            return self.progress_linger(key);
        }
        self.start_read(key);
        self.start_write(key);
    }

    /// Starts a graceful close: no new operations, the reads answered (an in-flight one
    /// cancelled), a timer for the rest. Past [`MAX_LINGERING`] the close is immediate.
    fn begin_linger(&mut self, key: u64) {
        if self.lingering >= MAX_LINGERING {
            if let Some(c) = self.conns.get_mut(key) {
                c.closing = Some(io::ErrorKind::NotConnected);
            }
            return;
        }
        let timer = self
            .timers
            .arm(TimerFor::Linger(key), Instant::now() + self.linger);
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        drop(c.shared.queue.seal());
        c.linger = Some((Linger::Flush, timer));
        self.lingering += 1;
        if let Some(op) = c.read_op {
            self.cancel_op(op);
        }
    }

    /// Closing gracefully: the writes go out, then the write shutdown, then input is
    /// discarded until the peer's end of stream.
    fn progress_linger(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.ops.take(&c.shared, &c.loop_waker); // what was queued before the seal
        let delivery = &self.delivery;
        for r in c.ops.reads.drain(..) {
            r.stop(delivery, io::ErrorKind::NotConnected);
        }
        let Some((phase, _)) = c.linger else {
            return;
        };
        if phase == Linger::Flush && (c.write_op.is_some() || !c.ops.writes.is_empty()) {
            return self.start_write(key);
        }
        if c.read_op.is_some() || c.write_op.is_some() {
            return; // a cancelled read, or the write shutdown, is still in flight
        }
        let fd = sys::fd(c.fd.as_raw_fd());
        match phase {
            Linger::Flush => {
                let sqe = opcode::Shutdown::new(fd, libc::SHUT_WR).build();
                let op = self.submit(sqe, Entry::LingerFin { conn: key });
                if let Some(c) = self.conns.get_mut(key) {
                    c.write_op = Some(op);
                    c.linger = c.linger.map(|(_, t)| (Linger::Fin, t));
                }
            }
            Linger::Fin => {}
            Linger::Discard => {
                let mut buf = vec![0u8; 4096].into_boxed_slice();
                let sqe = opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build();
                let op = self.submit(
                    sqe,
                    Entry::LingerRecv {
                        conn: key,
                        _buf: buf,
                    },
                );
                if let Some(c) = self.conns.get_mut(key) {
                    c.read_op = Some(op);
                }
            }
        }
    }

    pub(super) fn linger_fin_done(&mut self, key: u64) {
        if let Some(c) = self.conns.get_mut(key) {
            c.write_op = None;
            c.linger = c.linger.map(|(_, t)| (Linger::Discard, t));
            self.dirty.push_back(Key::Conn(key));
        }
    }

    pub(super) fn linger_recv_done(&mut self, key: u64, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.read_op = None;
        if res <= 0 {
            // The peer's end of stream (or an error, or the cancel of a close): done.
            c.closing.get_or_insert(io::ErrorKind::NotConnected);
        }
        self.dirty.push_back(Key::Conn(key));
    }

    /// The graceful close ran out of time: what is left is answered and the connection closed.
    pub(super) fn linger_expired(&mut self, key: u64) {
        if let Some(c) = self.conns.get_mut(key)
            && let Some((_, _)) = c.linger
        {
            c.closing.get_or_insert(io::ErrorKind::NotConnected);
            self.dirty.push_back(Key::Conn(key));
        }
    }

    /// Stops every queued operation, cancels what is in flight, frees the connection once
    /// nothing is.
    pub(super) fn close_conn(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let kind = c.closing.unwrap_or(io::ErrorKind::NotConnected);
        c.ops.stop_all(&c.shared, kind);
        if let Some(t) = c.read_timer.take() {
            self.timers.cancel(t);
        }
        let in_flight: Vec<u64> = c.read_op.into_iter().chain(c.write_op).collect();
        if in_flight.is_empty() {
            let forced = c.forced;
            if let Some((_, timer)) = c.linger.take() {
                self.timers.cancel(timer);
                self.lingering -= 1;
            }
            self.conns.remove(key); // closes the descriptor
            self.starved.retain(|&k| k != key);
            if self.drain_deadline.is_some() {
                if forced {
                    self.forced += 1;
                } else {
                    self.drained += 1;
                }
            }
            return;
        }
        for op in in_flight {
            self.cancel_op(op);
        }
    }

    pub(super) fn start_read(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(op) = c.read_op {
            // In flight: cancel it if its token asked, or the loop is draining.
            if self.ops.get(op).is_some_and(|f| match &f.entry {
                Entry::Read { op, .. } => op.c.is_cancelled(),
                Entry::Recv { op, .. } => op.c.is_cancelled(),
                _ => false,
            }) {
                self.cancel_op(op);
            }
            return;
        }
        if c.starved {
            return; // parked until a buffer comes back
        }
        while let Some(front) = c.ops.reads.front() {
            if front.is_cancelled() {
                if let Some(r) = c.ops.reads.pop_front() {
                    r.stop(&self.delivery, io::ErrorKind::Interrupted);
                }
                continue;
            }
            break;
        }
        let Some(read) = c.ops.reads.pop_front() else {
            return;
        };
        let timeout = read.timeout();
        let fd = sys::fd(c.fd.as_raw_fd());
        let op = match read {
            Read::Into(mut r) => {
                if r.buf.is_empty() {
                    let ReadOp { buf, c: done, .. } = r;
                    self.delivery.complete(done, Ok(Done { buf, n: 0 }));
                    self.dirty.push_back(Key::Conn(key));
                    return;
                }
                let rest = &mut r.buf[r.filled..];
                let sqe = opcode::Recv::new(fd, rest.as_mut_ptr(), rest.len() as u32).build();
                self.submit(sqe, Entry::Read { conn: key, op: r })
            }
            Read::Pooled(r) => {
                let sqe = opcode::Recv::new(fd, std::ptr::null_mut(), self.bufs.slab.size as u32)
                    .buf_group(0)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT);
                self.submit(sqe, Entry::Recv { conn: key, op: r })
            }
        };
        let read_timer = timeout.map(|t| self.timers.arm(TimerFor::Read(key), Instant::now() + t));
        if let Some(c) = self.conns.get_mut(key) {
            c.read_op = Some(op);
            c.read_timer = read_timer;
        }
    }

    pub(super) fn read_done(&mut self, key: u64, mut r: ReadOp, res: i32, timed_out: bool) {
        if self.end_read(key).is_none() {
            return r.stop(&self.delivery, io::ErrorKind::NotConnected);
        }
        if res == -libc::ECANCELED || (timed_out && res < 0) {
            if timed_out {
                Read::Into(r).fail(&self.delivery, io::ErrorKind::TimedOut);
            } else {
                r.stop(&self.delivery, io::ErrorKind::Interrupted);
            }
            return;
        }
        if res < 0 {
            let error = io::Error::from_raw_os_error(-res);
            let kind = error.kind();
            let ReadOp { buf, filled, c, .. } = r;
            self.delivery.complete(
                c,
                Err(OpError {
                    error,
                    buf,
                    n: filled,
                }),
            );
            return self.fail_conn(key, kind);
        }
        let n = res as usize;
        if n == 0 && r.exact {
            return Read::Into(r).fail(&self.delivery, io::ErrorKind::UnexpectedEof);
        }
        r.filled += n;
        if r.exact && n > 0 && r.filled < r.buf.len() {
            // More to fill: back to the front, and on.
            if let Some(c) = self.conns.get_mut(key) {
                c.ops.reads.push_front(Read::Into(r));
            }
            return;
        }
        let ReadOp { buf, filled, c, .. } = r;
        self.delivery.complete(c, Ok(Done { buf, n: filled }));
    }

    pub(super) fn recv_done(&mut self, key: u64, r: RecvOp, res: i32, flags: u32, timed_out: bool) {
        let bid = cqueue::buffer_select(flags);
        let waker = self.rings.loops[self.index].buf_waker.clone();
        let data = bid
            .map(|bid| RingBuf::new(Arc::clone(&self.bufs.slab), bid, res.max(0) as usize, waker));
        if self.end_read(key).is_none() {
            drop(data);
            return r.stop(&self.delivery);
        }
        if res == -libc::ENOBUFS {
            // Every buffer is lent out: park the receive until one comes back. Raise the flag,
            // then look at the returns once more (a buffer dropped before the flag was up did
            // not wake us): the Dekker pair of `RingBuf::drop`.
            if let Some(c) = self.conns.get_mut(key) {
                c.ops.reads.push_front(Read::Pooled(r));
                c.starved = true;
            }
            self.starved.push(key);
            let returned = self.bufs.slab.starve();
            if self.bufs.refill(returned) > 0 {
                self.unstarve();
            }
            return;
        }
        if res == -libc::ECANCELED || (timed_out && res < 0) {
            let done = r.c;
            if timed_out {
                self.delivery
                    .run(move || done.complete(Err(io::ErrorKind::TimedOut.into())));
            } else {
                self.delivery.run(move || done.cancel(()));
            }
            return;
        }
        if res < 0 {
            let error = io::Error::from_raw_os_error(-res);
            let kind = error.kind();
            let done = r.c;
            self.delivery.run(move || done.complete(Err(error)));
            return self.fail_conn(key, kind);
        }
        let buf = data.map_or_else(RecvBuf::eof, RecvBuf::ring);
        let done = r.c;
        self.delivery.run(move || done.complete(Ok(buf)));
    }

    /// The read-side operation of `key` ended: clear it and its timer, look at the connection
    /// again. `None` if the connection is gone.
    pub(super) fn end_read(&mut self, key: u64) -> Option<()> {
        let c = self.conns.get_mut(key)?;
        c.read_op = None;
        if let Some(t) = c.read_timer.take() {
            self.timers.cancel(t);
        }
        self.dirty.push_back(Key::Conn(key));
        Some(())
    }

    pub(super) fn start_write(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(op) = c.write_op {
            if self.ops.get(op).is_some_and(|f| match &f.entry {
                Entry::Write {
                    op: WriteOp::Write { c, written, .. },
                    ..
                } => c.is_cancelled() && *written == 0,
                _ => false,
            }) {
                self.cancel_op(op);
            }
            return;
        }
        let fd = sys::fd(c.fd.as_raw_fd());
        let Some(w) = c.ops.writes.pop_front() else {
            return;
        };
        let sqe = match &w {
            WriteOp::Write {
                c: done, written, ..
            } if done.is_cancelled() && *written == 0 => {
                let bytes = w.queued_bytes();
                c.shared.queue.written(bytes);
                w.stop(&self.delivery, io::ErrorKind::Interrupted);
                self.dirty.push_back(Key::Conn(key));
                return;
            }
            WriteOp::Write {
                buf, len, written, ..
            } => {
                let rest = &buf[*written..*len];
                opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            WriteOp::Shutdown { .. } => opcode::Shutdown::new(fd, libc::SHUT_WR).build(),
        };
        let op = self.submit(sqe, Entry::Write { conn: key, op: w });
        if let Some(c) = self.conns.get_mut(key) {
            c.write_op = Some(op);
        }
    }

    pub(super) fn write_done(&mut self, key: u64, w: WriteOp, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            return w.stop(&self.delivery, io::ErrorKind::NotConnected);
        };
        c.write_op = None;
        self.dirty.push_back(Key::Conn(key));
        match w {
            WriteOp::Shutdown { c: done } => {
                let result = if res < 0 {
                    Err(OpError {
                        error: io::Error::from_raw_os_error(-res),
                        buf: Vec::new(),
                        n: 0,
                    })
                } else {
                    Ok(Done {
                        buf: Vec::new(),
                        n: 0,
                    })
                };
                self.delivery.complete(done, result);
            }
            WriteOp::Write {
                buf,
                len,
                mut written,
                c: done,
            } => {
                if res == -libc::ECANCELED {
                    let w = WriteOp::Write {
                        buf,
                        len,
                        written,
                        c: done,
                    };
                    c.shared.queue.written(w.queued_bytes());
                    return w.stop(&self.delivery, io::ErrorKind::Interrupted);
                }
                if res < 0 {
                    let error = io::Error::from_raw_os_error(-res);
                    let kind = error.kind();
                    c.shared.queue.written(len.max(1));
                    self.delivery.complete(
                        done,
                        Err(OpError {
                            error,
                            buf,
                            n: written,
                        }),
                    );
                    return self.fail_conn(key, kind);
                }
                written += res as usize;
                if written < len {
                    // A short send: the rest goes first, before any later write.
                    c.ops.writes.push_front(WriteOp::Write {
                        buf,
                        len,
                        written,
                        c: done,
                    });
                    return;
                }
                c.shared.queue.written(len.max(1));
                self.delivery.complete(done, Ok(Done { buf, n: len }));
            }
        }
    }

    pub(super) fn fail_conn(&mut self, key: u64, kind: io::ErrorKind) {
        if let Some(c) = self.conns.get_mut(key) {
            tracing::debug!(peer = %c.shared.peer, ?kind, "posa io_uring: connection error");
            c.closing.get_or_insert(kind);
        }
        self.dirty.push_back(Key::Conn(key));
    }
}
