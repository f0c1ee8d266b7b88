//! Waiting on many tokens: [`wait_all`] (every outcome, in order) and [`TokenSet`] (each outcome
//! as it arrives, the POSA2 "wait for any" of Asynchronous Completion Tokens).
//!
//! # Invariants
//! - Each inserted token's outcome is yielded exactly once, in completion order; its id is the
//!   insertion index.
//! - A completion callback only pushes the outcome and notifies under the set's lock, so a
//!   waiter re-checking under that lock cannot miss it. Dropping the set cancels what is still
//!   pending.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use super::{Canceller, Outcome, TimedOut, Token};
use crate::sync::{Arc, Condvar, Mutex};

/// Waits for every token, returning the outcomes in the tokens' order.
pub fn wait_all<T, E, R>(
    tokens: impl IntoIterator<Item = Token<T, E, R>>,
) -> Vec<Outcome<T, E, R>> {
    tokens.into_iter().map(Token::wait).collect()
}

/// One completion from a [`TokenSet`]: the token's id and its outcome.
pub type Completion<T, E, R = ()> = (usize, Outcome<T, E, R>);

struct SetShared<T, E, R> {
    done: Mutex<VecDeque<Completion<T, E, R>>>,
    cv: Condvar,
}

/// A set of tokens that yields outcomes in completion order (ACE's `Future_Set`).
///
/// Each token gets an id from [`insert`](Self::insert); the set is an [`Iterator`] whose `next`
/// blocks until any token of the set completes. Dropping the set cancels the tokens still pending.
///
/// ```
/// use posa::act::{self, TokenSet};
///
/// let mut set = TokenSet::new();
/// let (slow, slow_token) = act::pair::<&str, ()>();
/// let (fast, fast_token) = act::pair::<&str, ()>();
/// let slow_id = set.insert(slow_token);
/// let fast_id = set.insert(fast_token);
/// fast.complete(Ok("fast"));
/// let (id, outcome) = set.next().unwrap();
/// assert_eq!((id, outcome.into_result().unwrap()), (fast_id, "fast"));
/// slow.complete(Ok("slow"));
/// assert_eq!(set.next().unwrap().0, slow_id);
/// assert!(set.next().is_none());
/// ```
pub struct TokenSet<T, E, R = ()> {
    shared: Arc<SetShared<T, E, R>>,
    pending: Vec<Option<Canceller<T, E, R>>>,
    outstanding: usize,
}

impl<T, E, R> TokenSet<T, E, R>
where
    T: Send + 'static,
    E: Send + 'static,
    R: Send + 'static,
{
    /// An empty set.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(SetShared {
                done: Mutex::new(VecDeque::new()),
                cv: Condvar::new(),
            }),
            pending: Vec::new(),
            outstanding: 0,
        }
    }

    /// Adds a token and returns its id (ids count up from 0 in insertion order).
    pub fn insert(&mut self, token: Token<T, E, R>) -> usize {
        let id = self.pending.len();
        self.pending.push(Some(token.canceller()));
        self.outstanding += 1;
        let shared = Arc::clone(&self.shared);
        token.on_complete(move |outcome| {
            shared.done.lock().push_back((id, outcome));
            shared.cv.notify_one();
        });
        id
    }

    /// Tokens inserted whose outcome the set has not yielded yet.
    pub fn len(&self) -> usize {
        self.outstanding
    }

    /// `true` when every inserted token's outcome has been returned.
    pub fn is_empty(&self) -> bool {
        self.outstanding == 0
    }

    /// Like [`next`](Iterator::next), but gives up at `deadline`.
    pub fn next_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Completion<T, E, R>>, TimedOut<()>> {
        self.next_inner(Some(deadline))
    }

    fn next_inner(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Completion<T, E, R>>, TimedOut<()>> {
        if self.outstanding == 0 {
            return Ok(None);
        }
        let mut done = self.shared.done.lock();
        loop {
            if let Some((id, outcome)) = done.pop_front() {
                drop(done);
                self.outstanding -= 1;
                self.pending[id] = None;
                return Ok(Some((id, outcome)));
            }
            match deadline {
                None => self.shared.cv.wait(&mut done),
                Some(deadline) => {
                    if self.shared.cv.wait_until(&mut done, deadline) && done.is_empty() {
                        return Err(TimedOut(()));
                    }
                }
            }
        }
    }

    /// Requests cancellation of every token still pending.
    pub fn cancel_all(&self) {
        for canceller in self.pending.iter().flatten() {
            canceller.cancel();
        }
    }
}

/// Blocks until some token completes and yields its id and outcome; ends once all did.
impl<T, E, R> Iterator for TokenSet<T, E, R>
where
    T: Send + 'static,
    E: Send + 'static,
    R: Send + 'static,
{
    type Item = Completion<T, E, R>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_inner(None) {
            Ok(next) => next,
            Err(TimedOut(())) => unreachable!("an untimed wait does not time out"),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.outstanding, Some(self.outstanding))
    }
}

impl<T, E, R> Default for TokenSet<T, E, R>
where
    T: Send + 'static,
    E: Send + 'static,
    R: Send + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T, E, R> Drop for TokenSet<T, E, R> {
    fn drop(&mut self) {
        for canceller in self.pending.iter().flatten() {
            canceller.cancel();
        }
    }
}

impl<T, E, R> fmt::Debug for TokenSet<T, E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("outstanding", &self.outstanding)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::{Outcome, pair};

    #[test]
    fn a_set_counts_what_is_outstanding_and_cancels_it_all() {
        let mut set = TokenSet::<u8, ()>::new();
        assert!(set.is_empty());
        assert_eq!(set.size_hint(), (0, Some(0)));
        let (a, ta) = pair::<u8, ()>();
        let (b, tb) = pair::<u8, ()>();
        set.insert(ta);
        set.insert(tb);
        assert!(!set.is_empty());
        assert_eq!(set.len(), 2);
        assert_eq!(set.size_hint(), (2, Some(2)));
        assert_eq!(format!("{set:?}"), "TokenSet { outstanding: 2 }");
        set.cancel_all();
        assert!(a.is_cancelled() && b.is_cancelled(), "every producer asked");
        a.complete(Ok(1));
        b.cancel(());
        let mut got: Vec<_> = set.by_ref().collect();
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(
            got,
            vec![
                (0, Outcome::CancelledAfterEffect(Ok(1))),
                (1, Outcome::Cancelled(()))
            ]
        );
        assert!(set.is_empty());
        assert_eq!(set.size_hint(), (0, Some(0)));
    }
}
