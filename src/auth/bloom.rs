//! A Bloom filter of every app key in the store, rebuilt by the control side: a worker
//! answers "unknown app" for a key the filter does not contain without asking the store,
//! so random keys cannot hammer Redis (cache penetration). False positives only cost a
//! store lookup; there are no false negatives.

pub struct Bloom {
    bits: Vec<u64>,
    hashes: u32,
    keys: usize,
    /// Seeded per process: an attacker cannot precompute keys that collide.
    hasher: ahash::RandomState,
}

impl Bloom {
    /// A filter for `n` keys with about `fp_rate` false positives.
    pub fn with_capacity(n: usize, fp_rate: f64) -> Bloom {
        let n = n.max(1) as f64;
        let ln2 = std::f64::consts::LN_2;
        let bits = (-(n * fp_rate.clamp(1e-9, 0.5).ln()) / (ln2 * ln2))
            .ceil()
            .max(64.0);
        let hashes = ((bits / n) * ln2).round().clamp(1.0, 16.0) as u32;
        Bloom {
            bits: vec![0; (bits as usize).div_ceil(64)],
            hashes,
            keys: 0,
            hasher: ahash::RandomState::new(),
        }
    }

    pub fn from_keys<'a>(keys: impl ExactSizeIterator<Item = &'a str>, fp_rate: f64) -> Bloom {
        let mut b = Bloom::with_capacity(keys.len(), fp_rate);
        for k in keys {
            b.insert(k);
        }
        b
    }

    /// Double hashing: bit i is h1 + i * h2 (Kirsch and Mitzenmacher), from one 64-bit hash.
    fn positions(&self, key: &str) -> impl Iterator<Item = usize> + '_ {
        let h = self.hasher.hash_one(key);
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        let m = (self.bits.len() * 64) as u64;
        (0..u64::from(self.hashes)).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    pub fn insert(&mut self, key: &str) {
        let positions: Vec<usize> = self.positions(key).collect();
        for p in positions {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.keys += 1;
    }

    pub fn contains(&self, key: &str) -> bool {
        self.positions(key)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }

    pub fn keys(&self) -> usize {
        self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("app-{i}")).collect();
        let b = Bloom::from_keys(keys.iter().map(String::as_str), 0.01);
        assert!(keys.iter().all(|k| b.contains(k)));
        let fp = (0..10_000)
            .filter(|i| b.contains(&format!("other-{i}")))
            .count();
        assert!(fp < 250, "{fp} false positives in 10000 at a 1% target");
        assert_eq!(b.keys(), 10_000);
    }

    #[test]
    fn empty_filter_contains_nothing() {
        let b = Bloom::from_keys(std::iter::empty::<&str>(), 0.01);
        assert!(!b.contains("anything"));
    }
}
