//! A slab whose keys carry a generation: a key of a freed slot never names the slot's next
//! occupant (the same defence as the reactor's tokens, mio#219), so a late completion or
//! wake-up for something gone finds nothing.

/// Values keyed by `index | generation << 32`.
pub(super) struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

fn key(index: u32, generation: u32) -> u64 {
    u64::from(index) | (u64::from(generation) << 32)
}

fn split(key: u64) -> (usize, u32) {
    ((key & 0xFFFF_FFFF) as usize, (key >> 32) as u32)
}

impl<T> Slab<T> {
    pub(super) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// The key the next `insert` returns.
    pub(super) fn vacant_key(&self) -> u64 {
        match self.free.last() {
            Some(&i) => key(i, self.slots[i as usize].0),
            None => key(self.slots.len() as u32, 0),
        }
    }

    pub(super) fn insert(&mut self, value: T) -> u64 {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                slot.1 = Some(value);
                key(i, slot.0)
            }
            None => {
                let i = self.slots.len() as u32;
                self.slots.push((0, Some(value)));
                key(i, 0)
            }
        }
    }

    pub(super) fn get(&self, key: u64) -> Option<&T> {
        let (i, generation) = split(key);
        match self.slots.get(i) {
            Some((g, Some(v))) if *g == generation => Some(v),
            _ => None,
        }
    }

    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let (i, generation) = split(key);
        match self.slots.get_mut(i) {
            Some((g, Some(v))) if *g == generation => Some(v),
            _ => None,
        }
    }

    /// Removes the value; the slot's next occupant gets a new generation.
    pub(super) fn remove(&mut self, key: u64) -> Option<T> {
        let (i, generation) = split(key);
        let slot = self.slots.get_mut(i)?;
        if slot.0 != generation || slot.1.is_none() {
            return None;
        }
        let value = slot.1.take();
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(i as u32);
        self.len -= 1;
        value
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys of every value.
    pub(super) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, (g, v))| v.as_ref().map(|v| (key(i as u32, *g), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_finds_nothing_after_its_slot_is_reused() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.vacant_key(), a + 1);
        assert_eq!(s.remove(a), Some("a"));
        let next = s.vacant_key();
        let b = s.insert("b");
        assert_eq!(b, next);
        assert_ne!(a, b, "same slot, new generation");
        assert_eq!(s.get(a), None);
        assert_eq!(s.get_mut(a), None, "not through get_mut either");
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!((s.len(), s.keys().collect::<Vec<_>>()), (1, vec![b]));
    }
}
