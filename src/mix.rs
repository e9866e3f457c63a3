//! Small deterministic hashing shared by balancing, request ids and the workers' random
//! numbers. A leaf: it imports nothing of the crate.

/// splitmix64's finalizer: a fast, well-spread, deterministic 64-bit mix.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A worker's fast random numbers (balancing, adaptive throttling): splitmix64. Not for
/// secrets; per worker, so no cache line is shared between cores.
pub struct WorkerRng(std::cell::Cell<u64>);

impl WorkerRng {
    pub fn new(seed: u64) -> Self {
        WorkerRng(std::cell::Cell::new(seed))
    }

    pub fn next(&self) -> u64 {
        let s = self.0.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.0.set(s);
        mix64(s)
    }

    /// Uniform in [0, 1).
    pub fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
