//! Chunked transfer coding (RFC 9112 section 7.1). The decoder is a strict, incremental
//! state machine fed whatever bytes arrived; the gateway re-encodes what it forwards, so
//! the next hop only ever sees framing we produced ourselves. Trailers are read and
//! dropped (bounded).

use std::ops::Range;

const MAX_SIZE_DIGITS: u8 = 16;
const MAX_EXTENSION_BYTES: u16 = 1024;
const MAX_TRAILER_BYTES: u32 = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Input bytes used, framing and data alike.
    pub consumed: usize,
    /// Body data, as a range of the input.
    pub data: Option<Range<usize>>,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    ext_bytes: u16,
    trailer_bytes: u32,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// The whole body, last chunk and trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing bytes until it has a run of data to return, needs more input, or
    /// is done. Call again with the rest of the input until `consumed == input.len()`.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, &'static str> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == MAX_SIZE_DIGITS {
                            return Err("chunk size too large");
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.size =
                            self.size.checked_mul(16).ok_or("chunk size too large")? + u64::from(d);
                        self.digits += 1;
                    }
                    b';' if self.digits > 0 => self.state = State::Extension,
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err("invalid chunk size line"),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | b' '..=b'~' => {
                        self.ext_bytes += 1;
                        if self.ext_bytes > MAX_EXTENSION_BYTES {
                            return Err("chunk extension too long");
                        }
                    }
                    _ => return Err("invalid byte in a chunk extension"),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err("chunk size line must end with CRLF");
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                    self.digits = 0;
                    self.ext_bytes = 0;
                }
                State::Data => {
                    let take =
                        (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step {
                        consumed: i + take,
                        data: Some(i..i + take),
                    });
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data must be followed by CRLF");
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data must be followed by CRLF");
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::FinalLf
                    } else {
                        State::Trailer
                    };
                    self.count_trailer()?;
                    if b != b'\r' && !is_field_byte(b) {
                        return Err("invalid trailer field");
                    }
                }
                State::Trailer => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b if is_field_byte(b) => {}
                        _ => return Err("invalid trailer field"),
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err("trailer line must end with CRLF");
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err("chunked body must end with CRLF");
                    }
                    self.state = State::Done;
                    return Ok(Step {
                        consumed: i + 1,
                        data: None,
                    });
                }
                State::Done => {
                    return Ok(Step {
                        consumed: i,
                        data: None,
                    })
                }
            }
            i += 1;
        }
        Ok(Step {
            consumed: i,
            data: None,
        })
    }

    fn count_trailer(&mut self) -> Result<(), &'static str> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err("trailer section too large");
        }
        Ok(())
    }
}

fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

/// Appends the header of one chunk of `len` bytes (`len` must not be 0).
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), &'static str> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        for piece in input.chunks(step) {
            let mut pos = 0;
            while pos < piece.len() && !d.is_done() {
                let s = d.decode(&piece[pos..])?;
                if let Some(r) = s.data {
                    body.extend_from_slice(&piece[pos + r.start..pos + r.end]);
                }
                pos += s.consumed;
            }
        }
        Ok((body, d.is_done()))
    }

    #[test]
    fn decodes_in_any_split() {
        let raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..raw.len() {
            let (body, done) = decode_all(raw, step).unwrap();
            assert_eq!(body, b"hello world0123456789");
            assert!(done);
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut d = ChunkedDecoder::new();
        let raw = b"0\r\n\r\nGET / HTTP/1.1\r\n";
        let s = d.decode(raw).unwrap();
        assert_eq!(s.consumed, 5);
        assert!(d.is_done());
    }

    #[test]
    fn rejects_bad_framing() {
        for raw in [
            &b"x\r\n"[..],
            b"-1\r\n",
            b" 5\r\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"5\r\nhello\n",
            b"11111111111111111\r\n",
            b"\r\n",
            b"0\r\n\n",
            b"0\r\nbad\0trailer\r\n\r\n",
        ] {
            assert!(
                decode_all(raw, raw.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn chunk_header_is_lowercase_hex() {
        let mut out = Vec::new();
        write_chunk_header(&mut out, 0x1a2f);
        assert_eq!(out, b"1a2f\r\n");
    }
}
