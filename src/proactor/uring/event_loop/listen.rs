//! The loop's side of a listener on io_uring: a multishot accept while accepts wait, a
//! bounded hold for connections that arrive before an accept is initiated.

#[allow(clippy::wildcard_imports)]
use super::*;

impl RingLoop {
    // ---- listeners ------------------------------------------------------------------------

    pub(in crate::proactor::uring) fn add_listener(
        &mut self,
        listener: Listener,
        shared: SharedAccept,
    ) {
        let key = self.listeners.vacant_key();
        let waker = RingWaker::new(Arc::clone(&self.shared), Key::Listener(key));
        let loop_waker = LoopWaker::Ring(waker.clone());
        self.listeners.insert(RingListener {
            listener,
            shared,
            waker,
            loop_waker,
            waiting: VecDeque::new(),
            held: VecDeque::new(),
            accept_op: None,
            closing: false,
        });
        self.dirty.push_back(Key::Listener(key));
    }

    pub(super) fn progress_listener(&mut self, key: u64) {
        let Some(l) = self.listeners.get_mut(key) else {
            return;
        };
        l.waker.taken();
        let open = l.shared.queue.take(&l.loop_waker, &mut l.waiting);
        if !open {
            l.closing = true;
        }
        if l.closing {
            let (queued, _) = l.shared.queue.close();
            for c in l.waiting.drain(..).chain(queued) {
                c.cancel(());
            }
            l.held.clear(); // closes them
            match l.accept_op {
                Some(op) => self.cancel_op(op),
                None => {
                    self.listeners.remove(key);
                }
            }
            return;
        }
        // Hand held connections to waiting accepts, dropping cancelled accepts.
        self.hand_out(key);
        let Some(l) = self.listeners.get_mut(key) else {
            return;
        };
        if l.accept_op.is_none() && !l.waiting.is_empty() && l.held.len() < HELD_ACCEPTS {
            let fd = sys::fd(l.listener.as_raw_fd());
            let sqe = opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build();
            let op = self.submit(sqe, Entry::Accept { listener: key });
            if let Some(l) = self.listeners.get_mut(key) {
                l.accept_op = Some(op);
            }
        }
    }

    /// Matches held connections with waiting accepts.
    pub(super) fn hand_out(&mut self, key: u64) {
        loop {
            let Some(l) = self.listeners.get_mut(key) else {
                return;
            };
            while l.waiting.front().is_some_and(|c| c.is_cancelled()) {
                if let Some(c) = l.waiting.pop_front() {
                    c.cancel(());
                }
            }
            if l.waiting.is_empty() || l.held.is_empty() {
                return;
            }
            let (Some(c), Some(fd)) = (l.waiting.pop_front(), l.held.pop_front()) else {
                return;
            };
            let result = self.attach_accepted(fd);
            c.complete(result);
        }
    }

    /// One completion of a multishot accept: a descriptor, or an error.
    pub(super) fn accepted(&mut self, key: u64, res: i32) {
        if res < 0 {
            if res == -libc::ECANCELED {
                return;
            }
            let error = io::Error::from_raw_os_error(-res);
            tracing::debug!(%error, "posa io_uring: accept failed");
            // The caller decides (EMFILE: back off); the multishot has ended.
            if let Some(l) = self.listeners.get_mut(key)
                && let Some(c) = l.waiting.pop_front()
            {
                c.complete(Err(error));
            }
            return;
        }
        // SAFETY: the kernel handed us a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        let Some(l) = self.listeners.get_mut(key) else {
            return; // dropping closes it
        };
        if l.closing {
            return;
        }
        l.held.push_back(fd);
        let full = l.held.len() >= HELD_ACCEPTS;
        let op = l.accept_op;
        self.hand_out(key);
        if full && let Some(op) = op {
            self.cancel_op(op); // the rest wait in the kernel's backlog
        }
    }

    /// Makes a [`Conn`] of an accepted descriptor, on this loop or the next one round-robin.
    pub(super) fn attach_accepted(&mut self, fd: OwnedFd) -> io::Result<(Conn, Peer)> {
        let sock = socket2::SockRef::from(&fd);
        let peer = match sock.peer_addr().ok().and_then(|a| a.as_socket()) {
            Some(a) => {
                let _ = sock.set_tcp_nodelay(true);
                Peer::Tcp(a)
            }
            None => Peer::Unix,
        };
        let shared = self.rings.new_conn(peer);
        let target = self.rings.pick();
        if target == self.index {
            self.add_conn(fd, SharedConn::clone(&shared));
        } else {
            let conn_shared = SharedConn::clone(&shared);
            self.rings.loops[target]
                .post(Box::new(move |lp: &mut RingLoop| {
                    lp.add_conn(fd, conn_shared)
                }))
                .map_err(|_| io::Error::other("the proactor's loop is busy or stopping"))?;
        }
        Ok((Conn::new(shared), peer))
    }
}
