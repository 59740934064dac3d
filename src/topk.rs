//! Bounded best-k selection with a deterministic order, shared by every search stage.

/// A scored document: its ordinal and a score (MaxSim, or an FDE/ADC inner product).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Document index.
    pub doc: u32,
    /// The score; higher is better.
    pub score: f32,
}

/// Keeps the `k` best [`Scored`] entries seen: higher score first, ties by lower document index
/// (the order the ground-truth files use).
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    items: Vec<Scored>,
}

fn better(a: &Scored, b: &Scored) -> bool {
    a.score > b.score || (a.score == b.score && a.doc < b.doc)
}

impl TopK {
    /// An empty collector for the best `k`.
    pub fn new(k: usize) -> Self {
        // Capacity grows on demand past a small start: `k` is caller-supplied.
        TopK { k, items: Vec::with_capacity(k.min(1024) + 1) }
    }

    /// Offers one entry.
    pub fn push(&mut self, item: Scored) {
        if self.k == 0 {
            return;
        }
        if self.items.len() == self.k {
            match self.items.last() {
                Some(worst) if better(&item, worst) => {}
                _ => return,
            }
            self.items.pop();
        }
        let pos = self.items.partition_point(|x| better(x, &item));
        self.items.insert(pos, item);
    }

    /// The kept entries, best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_orders_by_score_then_index() {
        let mut top = TopK::new(3);
        for (doc, score) in [(0, 1.0), (1, 3.0), (2, 2.0), (3, 3.0), (4, 0.5)] {
            top.push(Scored { doc, score });
        }
        let docs: Vec<u32> = top.into_sorted().iter().map(|s| s.doc).collect();
        assert_eq!(docs, vec![1, 3, 2]);
        let mut none = TopK::new(0);
        none.push(Scored { doc: 0, score: 1.0 });
        assert!(none.into_sorted().is_empty());
    }
}
