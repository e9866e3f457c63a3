//! What a bench needs to stand in for one worker on the request path: the state the
//! filters borrow through `Env`, built the way a worker builds it.

use ringgate::auth::nonce::NonceCache;
use ringgate::filters::Env;
use ringgate::limits::worker::WorkerLimiter;
use ringgate::mix::WorkerRng;
use ringgate::trace::RequestIdGen;

pub struct BenchWorker {
    ids: RequestIdGen,
    nonces: NonceCache,
    limiter: WorkerLimiter,
    rng: WorkerRng,
}

impl BenchWorker {
    /// `nonce_shards` x `nonces_per_shard`: room for every signed request a bench sends.
    pub fn new(nonce_shards: usize, nonces_per_shard: usize) -> Self {
        BenchWorker {
            ids: RequestIdGen::new(42),
            nonces: NonceCache::new(nonce_shards, nonces_per_shard),
            limiter: WorkerLimiter::new(0, 1, ahash::RandomState::new(), 1024),
            rng: WorkerRng::new(7),
        }
    }

    pub fn env(&self) -> Env<'_> {
        Env {
            ids: &self.ids,
            nonces: &self.nonces,
            fleet_nonces: None,
            apps: None,
            limiter: &self.limiter,
            rng: &self.rng,
        }
    }
}
