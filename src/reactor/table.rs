//! The handler table: slots whose ids carry a generation, shared by both event-loop models.
//!
//! An id names a slot *and* the generation the slot had when the id was issued; freeing a slot
//! bumps its generation, so an id held by a stale event or timer never matches the slot's next
//! occupant (mio#219). Lookups by a stale id simply find nothing.

use std::io;

use super::{HandlerId, INDEX_BITS, INDEX_MASK};

struct Entry<T> {
    generation: usize,
    value: Option<T>,
}

/// Generation-tagged slots with a free list.
pub(super) struct Table<T> {
    entries: Vec<Entry<T>>,
    free: Vec<usize>,
    live: usize,
}

impl<T> Table<T> {
    pub(super) fn new() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    /// Occupies a slot with `value`; refuses beyond `max` live entries.
    pub(super) fn insert(&mut self, value: T, max: usize) -> io::Result<HandlerId> {
        if self.live >= max {
            return Err(io::Error::other(format!(
                "the event loop holds its maximum of {max} handlers"
            )));
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                if self.entries.len() > INDEX_MASK {
                    return Err(io::Error::other("the handler table is full"));
                }
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        entry.value = Some(value);
        self.live += 1;
        Ok(HandlerId::new(index, entry.generation))
    }

    fn entry(&self, id: HandlerId) -> Option<&Entry<T>> {
        let index = id.index();
        self.entries
            .get(index)
            .filter(|e| e.value.is_some() && HandlerId::new(index, e.generation) == id)
    }

    /// The value under `id`, if `id` is current.
    pub(super) fn get(&self, id: HandlerId) -> Option<&T> {
        self.entry(id).and_then(|e| e.value.as_ref())
    }

    /// The value under `id`, mutably, if `id` is current.
    pub(super) fn get_mut(&mut self, id: HandlerId) -> Option<&mut T> {
        self.entry(id)?;
        self.entries[id.index()].value.as_mut()
    }

    /// Frees the slot of a current `id` (its generation moves on) and returns the value.
    pub(super) fn remove(&mut self, id: HandlerId) -> Option<T> {
        self.entry(id)?;
        let entry = &mut self.entries[id.index()];
        entry.generation = (entry.generation + 1) & (usize::MAX >> INDEX_BITS);
        self.free.push(id.index());
        self.live -= 1;
        entry.value.take()
    }

    /// The ids of every occupied slot.
    pub(super) fn ids(&self) -> Vec<HandlerId> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| HandlerId::new(i, e.generation))
            .collect()
    }

    /// Occupied slots.
    pub(super) fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo-mutants (issue 14): a slot's generation moves on with every reuse, so no id of
    /// an earlier occupant ever matches a later one (a generation that wrapped back after two
    /// reuses was unseen).
    #[test]
    fn every_reuse_of_a_slot_gets_a_new_generation() {
        let mut t = Table::new();
        let mut ids = Vec::new();
        for i in 0..4 {
            let id = t.insert(i, 8).unwrap();
            assert!(
                ids.iter()
                    .all(|old: &HandlerId| old.index() == id.index() && *old != id)
            );
            ids.push(id);
            assert_eq!(t.remove(id), Some(i));
        }
        let now = t.insert(9, 8).unwrap();
        assert!(
            ids.iter().all(|old| t.get(*old).is_none()),
            "a stale id found the new value"
        );
        assert_eq!(t.get(now), Some(&9));
    }

    #[test]
    fn stale_ids_never_match_the_next_occupant() {
        let mut t = Table::new();
        let a = t.insert("a", 10).unwrap();
        assert_eq!(t.remove(a), Some("a"));
        let b = t.insert("b", 10).unwrap();
        assert_eq!(a.index(), b.index());
        assert!(t.get(a).is_none() && t.remove(a).is_none());
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.ids(), vec![b]);
        assert!(t.insert("c", 2).is_ok());
        assert!(t.insert("d", 2).is_err(), "the cap holds");
    }
}
