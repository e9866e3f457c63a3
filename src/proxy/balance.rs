//! Choosing a target within an upstream. Pure and per worker: no locks, no shared state,
//! and everything that depends on chance or time comes in as an argument.

use crate::config::{Balance, Target};
use crate::mix::mix64;

#[derive(Debug)]
pub struct Balancer {
    kind: Kind,
    weights: Vec<u32>,
    total_weight: u64,
    /// Smooth weighted round robin state (the nginx algorithm): even spread, no bursts.
    current: Vec<i64>,
    /// Requests in flight per target, on this worker.
    outstanding: Vec<u32>,
    /// Rotates the starting point of least-outstanding scans so ties spread out.
    cursor: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RoundRobin,
    Random,
    LeastOutstanding,
    Hash,
}

impl Balancer {
    pub fn new(balance: &Balance, targets: &[Target]) -> Self {
        let kind = match balance {
            Balance::RoundRobin => Kind::RoundRobin,
            Balance::Random => Kind::Random,
            Balance::LeastOutstanding => Kind::LeastOutstanding,
            Balance::Hash(_) => Kind::Hash,
        };
        let weights: Vec<u32> = targets.iter().map(|t| t.weight.max(1)).collect();
        Balancer {
            kind,
            total_weight: weights.iter().map(|&w| u64::from(w)).sum(),
            current: vec![0; weights.len()],
            outstanding: vec![0; weights.len()],
            weights,
            cursor: 0,
        }
    }

    /// Picks a target index. `random` is a uniformly random u64 (used by `random`),
    /// `key` the request's hash key (used by `hash`).
    pub fn pick(&mut self, random: u64, key: u64) -> usize {
        if self.weights.len() <= 1 {
            return 0;
        }
        match self.kind {
            Kind::RoundRobin => self.pick_round_robin(),
            Kind::Random => self.pick_random(random),
            Kind::LeastOutstanding => self.pick_least_outstanding(),
            Kind::Hash => self.pick_hash(key),
        }
    }

    fn pick_round_robin(&mut self) -> usize {
        let mut best = 0;
        for i in 0..self.current.len() {
            self.current[i] += i64::from(self.weights[i]);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total_weight as i64;
        best
    }

    fn pick_random(&self, random: u64) -> usize {
        let mut r = random % self.total_weight;
        for (i, &w) in self.weights.iter().enumerate() {
            if r < u64::from(w) {
                return i;
            }
            r -= u64::from(w);
        }
        self.weights.len() - 1
    }

    /// Fewest in-flight requests relative to weight; ties go round the targets in turn.
    fn pick_least_outstanding(&mut self) -> usize {
        let n = self.weights.len();
        self.cursor = (self.cursor + 1) % n;
        let mut best = self.cursor;
        for k in 1..n {
            let i = (self.cursor + k) % n;
            // outstanding[i] / weight[i] < outstanding[best] / weight[best], without division.
            let lhs = u64::from(self.outstanding[i]) * u64::from(self.weights[best]);
            let rhs = u64::from(self.outstanding[best]) * u64::from(self.weights[i]);
            if lhs < rhs {
                best = i;
            }
        }
        best
    }

    /// Weighted rendezvous hashing: the same key lands on the same target on every worker
    /// and every gateway, and removing a target only moves the keys that were on it.
    fn pick_hash(&self, key: u64) -> usize {
        let mut best = 0;
        let mut best_score = f64::NEG_INFINITY;
        for (i, &w) in self.weights.iter().enumerate() {
            let h = mix64(key ^ mix64(i as u64 + 1));
            // Uniform in (0, 1): never 0, so ln() is finite.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = f64::from(w) / -u.ln();
            if score > best_score {
                best = i;
                best_score = score;
            }
        }
        best
    }

    pub fn begin(&mut self, target: usize) {
        self.outstanding[target] += 1;
    }

    pub fn end(&mut self, target: usize) {
        self.outstanding[target] = self.outstanding[target].saturating_sub(1);
    }
}

/// FNV-1a over bytes, then mixed: stable across processes and builds (unlike a seeded
/// hasher), which stickiness across gateways needs.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashOn;

    fn targets(weights: &[u32]) -> Vec<Target> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Target {
                addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                weight,
            })
            .collect()
    }

    fn counts(
        b: &mut Balancer,
        n: usize,
        picks: usize,
        mut next: impl FnMut(usize) -> (u64, u64),
    ) -> Vec<usize> {
        let mut c = vec![0; n];
        for i in 0..picks {
            let (r, k) = next(i);
            c[b.pick(r, k)] += 1;
        }
        c
    }

    #[test]
    fn round_robin_follows_weights_smoothly() {
        let mut b = Balancer::new(&Balance::RoundRobin, &targets(&[1, 3]));
        let seq: Vec<usize> = (0..8).map(|_| b.pick(0, 0)).collect();
        assert_eq!(seq, [1, 0, 1, 1, 1, 0, 1, 1]);
    }

    #[test]
    fn random_follows_weights() {
        let mut b = Balancer::new(&Balance::Random, &targets(&[1, 3]));
        let c = counts(&mut b, 2, 4000, |i| (mix64(i as u64), 0));
        assert!((850..1150).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_outstanding_prefers_idle_targets() {
        let mut b = Balancer::new(&Balance::LeastOutstanding, &targets(&[1, 1, 1]));
        b.begin(0);
        b.begin(0);
        b.begin(2);
        assert_eq!(b.pick(0, 0), 1);
        b.begin(1);
        b.begin(1);
        assert_eq!(b.pick(0, 0), 2);
        b.end(0);
        b.end(0);
        assert_eq!(b.pick(0, 0), 0);
    }

    #[test]
    fn hash_is_sticky_spread_and_stable_when_targets_are_removed() {
        let mut b3 = Balancer::new(&Balance::Hash(HashOn::ClientIp), &targets(&[1, 1, 1]));
        let keys: Vec<u64> = (0..3000)
            .map(|i| hash_key(format!("10.0.{}.{}", i / 256, i % 256).as_bytes()))
            .collect();
        let first: Vec<usize> = keys.iter().map(|&k| b3.pick(0, k)).collect();
        let again: Vec<usize> = keys.iter().map(|&k| b3.pick(7, k)).collect();
        assert_eq!(first, again);
        for t in 0..3 {
            let share = first.iter().filter(|&&x| x == t).count();
            assert!((800..1200).contains(&share), "target {t} got {share}");
        }
        // Dropping the last target moves only the keys that were on it.
        let mut b2 = Balancer::new(&Balance::Hash(HashOn::ClientIp), &targets(&[1, 1]));
        for (&k, &was) in keys.iter().zip(&first) {
            if was < 2 {
                assert_eq!(b2.pick(0, k), was);
            }
        }
    }
}
