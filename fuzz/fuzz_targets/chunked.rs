//! The chunked decoder: any bytes, fed in any pieces, give the same body and the same
//! verdict as fed at once; never a panic, never a range outside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::chunked::ChunkedDecoder;

/// Decodes `input` in pieces of at most `piece` bytes: the body, and whether it ended
/// (`Some(true)`), failed (`Some(false)`) or needs more (`None`).
fn decode(input: &[u8], piece: usize) -> (Vec<u8>, Option<bool>) {
    let mut d = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for part in input.chunks(piece.max(1)) {
        pending.extend_from_slice(part);
        loop {
            if d.is_done() {
                return (body, Some(true));
            }
            match d.decode(&pending) {
                Err(_) => return (body, Some(false)),
                Ok(step) => {
                    assert!(step.consumed <= pending.len());
                    if let Some(r) = &step.data {
                        assert!(r.start <= r.end && r.end <= step.consumed);
                        body.extend_from_slice(&pending[r.clone()]);
                    }
                    pending.drain(..step.consumed);
                    if step.consumed == 0 {
                        break;
                    }
                }
            }
        }
    }
    (body, d.is_done().then_some(true))
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len());
    let pieces = decode(input, piece as usize % 7 + 1);
    assert_eq!(whole, pieces, "pieces of {}", piece as usize % 7 + 1);
});
