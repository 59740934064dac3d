//! Which ordinals of a segment are live (the id map points at them), as a bitset. Derived from the
//! catalog at open and replaced copy-on-write at each commit; never stored.

/// A fixed-size bitset of live ordinals with its population count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveBits {
    words: Vec<u64>,
    len: usize,
    live: usize,
}

impl LiveBits {
    /// `len` ordinals, none live.
    pub fn none(len: usize) -> Self {
        LiveBits { words: vec![0; len.div_ceil(64)], len, live: 0 }
    }

    /// `len` ordinals, all live.
    pub fn all(len: usize) -> Self {
        let mut bits = LiveBits::none(len);
        for i in 0..len {
            bits.set(i as u32);
        }
        bits
    }

    /// Marks `ordinal` live (no-op if it already is). Panics past the end.
    pub fn set(&mut self, ordinal: u32) {
        let (w, b) = (ordinal as usize / 64, ordinal % 64);
        assert!((ordinal as usize) < self.len, "ordinal {ordinal} past {}", self.len);
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.live += 1;
        }
    }

    /// Marks `ordinal` dead (no-op if it already is or is out of range).
    pub fn clear(&mut self, ordinal: u32) {
        let (w, b) = (ordinal as usize / 64, ordinal % 64);
        if (ordinal as usize) < self.len && self.words[w] & (1 << b) != 0 {
            self.words[w] &= !(1 << b);
            self.live -= 1;
        }
    }

    /// True if `ordinal` is live.
    pub fn is_live(&self, ordinal: u32) -> bool {
        (ordinal as usize) < self.len && self.words[ordinal as usize / 64] & (1 << (ordinal % 64)) != 0
    }

    /// Live ordinals.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// Ordinals in the segment.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a segment of no documents.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live ordinals, ascending.
    pub fn iter_live(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len as u32).filter(|&o| self.is_live(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count() {
        let mut b = LiveBits::none(130);
        b.set(0);
        b.set(129);
        b.set(129);
        assert_eq!(b.live_count(), 2);
        b.clear(0);
        b.clear(5);
        b.clear(1000);
        assert_eq!(b.iter_live().collect::<Vec<_>>(), vec![129]);
        assert_eq!(LiveBits::all(70).live_count(), 70);
        assert!(!b.is_live(200));
    }
}
