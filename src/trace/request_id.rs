//! Request ids: a client's `X-Request-Id` is kept when it is well-formed, otherwise the
//! gateway makes one. Fixed-size and `Copy` so the hot path never allocates for it.

use std::cell::Cell;

const MAX_LEN: usize = 64;

#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl RequestId {
    /// A client-supplied id, if it is 1-64 bytes of `[A-Za-z0-9._:-]` (safe to echo in
    /// headers, logs and JSON without escaping).
    pub fn from_header(v: &[u8]) -> Option<Self> {
        let ok = !v.is_empty()
            && v.len() <= MAX_LEN
            && v.iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| {
            let mut bytes = [0; MAX_LEN];
            bytes[..v.len()].copy_from_slice(v);
            RequestId {
                bytes,
                len: v.len() as u8,
            }
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII ever gets in (see the constructors).
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-worker generator: a random 64-bit prefix chosen at start and a counter, printed as
/// 32 lowercase hex digits. Unique without coordination between workers or gateways.
pub struct RequestIdGen {
    prefix: u64,
    counter: Cell<u64>,
}

impl RequestIdGen {
    pub fn new(seed: u64) -> Self {
        RequestIdGen {
            prefix: seed,
            counter: Cell::new(0),
        }
    }

    pub fn next_id(&self) -> RequestId {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        let mut bytes = [0; MAX_LEN];
        hex16(self.prefix, &mut bytes[..16]);
        hex16(n, &mut bytes[16..32]);
        RequestId { bytes, len: 32 }
    }
}

impl RequestIdGen {
    /// 64 unpredictable-looking, unique bits (trace and span ids): the counter and the
    /// random prefix, mixed.
    pub fn next_random(&self) -> u64 {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        crate::mix::mix64(self.prefix ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// Two lowercase hex digits for every byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    t
};

/// `v` as 16 lowercase hex digits into `out` (16 bytes), a byte at a time.
pub(super) fn hex16(v: u64, out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[byte as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_hex() {
        let g = RequestIdGen::new(0xdead_beef);
        let a = g.next_id();
        let b = g.next_id();
        assert_eq!(a.as_str(), "00000000deadbeef0000000000000001");
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn client_ids_are_validated() {
        assert_eq!(
            RequestId::from_header(b"abc-123_x.y:z").unwrap().as_str(),
            "abc-123_x.y:z"
        );
        assert!(RequestId::from_header(b"").is_none());
        assert!(RequestId::from_header(b"has space").is_none());
        assert!(RequestId::from_header(b"quote\"").is_none());
        assert!(RequestId::from_header(&[b'a'; 65]).is_none());
    }
}
