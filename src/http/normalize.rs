//! Request-path normalization: the one canonical form that routing decides on and that
//! the upstream receives, so `/public/../admin` can never reach what `/admin` would not.
//!
//! Hand-written (not a URL crate) because it runs on every request and must not allocate
//! beyond the caller's reusable buffer.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;

/// Why a request path was refused; every variant maps to `bad_request` [400].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalizeError {
    /// Empty, or does not start with '/' (only origin-form targets are routed).
    NotAbsolute,
    /// A byte outside RFC 3986 `pchar` / '/': controls, space, '#', '\\', non-ASCII, ...
    InvalidByte { at: usize, byte: u8 },
    /// A '%' not followed by two hex digits.
    BadEscape { at: usize },
    /// A ".." segment (possibly percent-encoded) would climb above the root.
    EscapesRoot,
    /// A `..;` or `.;` segment, which servlet containers read as a dot-segment.
    DotSegmentParameter,
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NormalizeError::NotAbsolute => f.write_str("path must start with '/'"),
            NormalizeError::InvalidByte { at, byte } if byte.is_ascii_graphic() => write!(
                f,
                "character '{}' (0x{byte:02X}) at offset {at} is not allowed in a path",
                byte as char
            ),
            NormalizeError::InvalidByte { at, byte } => {
                write!(
                    f,
                    "byte 0x{byte:02X} at offset {at} is not allowed in a path"
                )
            }
            NormalizeError::BadEscape { at } => write!(
                f,
                "malformed percent-escape at offset {at}: '%' must be followed by two hex digits"
            ),
            NormalizeError::EscapesRoot => f.write_str("path climbs above the root with \"..\""),
            NormalizeError::DotSegmentParameter => {
                f.write_str("segments starting with \"..;\" or \".;\" are not allowed")
            }
        }
    }
}

impl std::error::Error for NormalizeError {}

/// RFC 3986 `pchar` minus '%' (escapes are handled separately).
static PCHAR: [bool; 256] = byte_table(b"-._~!$&'()*+,;=:@");
/// RFC 3986 `unreserved`: the only characters whose escapes are decoded.
static UNRESERVED: [bool; 256] = byte_table(b"-._~");

const fn byte_table(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 128u8 {
        t[c as usize] = c.is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Normalizes the path part of an origin-form request target (no query; caller split at
/// the first '?') into `out`, which is cleared first.
///
/// Escapes of unreserved characters are decoded, all other escapes are kept with upper-case
/// hex (`%2F` stays encoded, so it never separates segments), runs of '/' fold into one,
/// and "." / ".." segments are resolved after decoding (RFC 3986 5.2.4); climbing above
/// the root is an error, not clamped. A trailing slash is kept.
///
/// # Errors
/// The path is not absolute, has a byte outside `pchar`, a malformed escape, or climbs
/// above the root; `out` then holds garbage.
pub fn normalize_path(raw: &[u8], out: &mut String) -> Result<(), NormalizeError> {
    normalize_segments(raw, out)?;
    // `..;x` and `.;x` are plain segments to us but dot-segments to servlet containers
    // (Tomcat, Jetty, Spring strip path parameters first): `/public/..;/admin` would reach
    // `/admin` behind a `/public/*` route. They have no legitimate use; refuse them.
    if memchr::memchr(b';', out.as_bytes()).is_some()
        && out
            .split('/')
            .any(|seg| seg.starts_with("..;") || seg.starts_with(".;"))
    {
        return Err(NormalizeError::DotSegmentParameter);
    }
    Ok(())
}

fn normalize_segments(raw: &[u8], out: &mut String) -> Result<(), NormalizeError> {
    out.clear();
    // Word-at-a-time for ASCII, and it lets us copy runs as &str without `unsafe`.
    let path = std::str::from_utf8(raw).map_err(|e| NormalizeError::InvalidByte {
        at: e.valid_up_to(),
        byte: raw.get(e.valid_up_to()).copied().unwrap_or(0),
    })?;
    if raw.first() != Some(&b'/') {
        return Err(NormalizeError::NotAbsolute);
    }

    // Fast path: validate while looking for the first segment that needs rewriting. Most
    // paths have none and are copied whole; otherwise the clean prefix (which ends with '/')
    // is copied and `rewrite` carries on from there, so every byte is still scanned ~once.
    let mut seg_start = 1;
    let mut i = 1;
    let dirty_from = loop {
        let Some(&c) = raw.get(i) else {
            break is_dot_segment(&raw[seg_start..]).then_some(seg_start);
        };
        if c == b'/' {
            if i == seg_start || is_dot_segment(&raw[seg_start..i]) {
                break Some(seg_start);
            }
            seg_start = i + 1;
        } else if c == b'%' {
            break Some(seg_start);
        } else if !PCHAR[c as usize] {
            return Err(NormalizeError::InvalidByte { at: i, byte: c });
        }
        i += 1;
    };
    match dirty_from {
        None => {
            out.push_str(path);
            Ok(())
        }
        Some(from) => {
            out.push_str(&path[..from]);
            rewrite(path, from, out)
        }
    }
}

fn is_dot_segment(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// Slow path from byte `i` (the start of a segment); `out` holds the normalized prefix and
/// ends with '/'. That invariant is what lets empty segments and "." simply vanish.
fn rewrite(path: &str, mut i: usize, out: &mut String) -> Result<(), NormalizeError> {
    let b = path.as_bytes();
    while i < b.len() {
        if b[i] == b'/' {
            // Empty segment: `out` already ends with '/'.
            i += 1;
            continue;
        }
        let start = out.len();
        while let Some(&c) = b.get(i).filter(|&&c| c != b'/') {
            if c == b'%' {
                let hi = b.get(i + 1).copied().and_then(hex_value);
                let lo = b.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(NormalizeError::BadEscape { at: i });
                };
                let v = hi << 4 | lo;
                if UNRESERVED[v as usize] {
                    out.push(v as char);
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    out.push('%');
                    out.push(HEX[(v >> 4) as usize] as char);
                    out.push(HEX[(v & 0xF) as usize] as char);
                }
                i += 3;
            } else if PCHAR[c as usize] {
                let run = i;
                while b.get(i).is_some_and(|&c| PCHAR[c as usize]) {
                    i += 1;
                }
                // Slicing is on ASCII boundaries: every byte in the run was just checked.
                out.push_str(&path[run..i]);
            } else {
                return Err(NormalizeError::InvalidByte { at: i, byte: c });
            }
        }
        // Dot segments are judged after decoding, so "%2e%2E" is "..".
        let seg = &out.as_bytes()[start..];
        if seg == b"." {
            out.truncate(start);
        } else if seg == b".." {
            // `out[..start]` is "/" or "/x/.../y/": drop ".." and the segment before it.
            if start == 1 {
                return Err(NormalizeError::EscapesRoot);
            }
            let parent_end = out[..start - 1].rfind('/').map_or(1, |p| p + 1);
            out.truncate(parent_end);
        } else if i < b.len() {
            out.push('/');
        }
    }
    Ok(())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, NormalizeError> {
        let mut out = String::from("stale contents");
        normalize_path(raw.as_bytes(), &mut out).map(|()| out)
    }

    fn ok(raw: &str, want: &str) {
        assert_eq!(norm(raw).as_deref(), Ok(want), "input {raw:?}");
    }

    #[test]
    fn clean_paths_are_copied_unchanged() {
        for p in [
            "/",
            "/a",
            "/a/b/c",
            "/a/b/",
            "/v1/orders/123",
            "/a.b/..c/c../...",
            "/~user/-_.!$&'()*+,;=:@",
        ] {
            ok(p, p);
        }
    }

    #[test]
    fn output_is_cleared_first() {
        let mut out = String::from("junk");
        normalize_path(b"/x", &mut out).unwrap();
        assert_eq!(out, "/x");
        normalize_path(b"/a/../y", &mut out).unwrap();
        assert_eq!(out, "/y");
    }

    #[test]
    fn must_be_absolute() {
        assert_eq!(norm(""), Err(NormalizeError::NotAbsolute));
        assert_eq!(norm("a/b"), Err(NormalizeError::NotAbsolute));
        assert_eq!(norm("*"), Err(NormalizeError::NotAbsolute));
        assert_eq!(norm("http://h/a"), Err(NormalizeError::NotAbsolute));
    }

    #[test]
    fn invalid_bytes_are_rejected_with_offset() {
        for (raw, at, byte) in [
            ("/a b", 2, b' '),
            ("/a#b", 2, b'#'),
            ("/a\\..\\b", 2, b'\\'),
            ("/a\tb", 2, b'\t'),
            ("/a\x7f", 2, 0x7f),
            ("/a?b", 2, b'?'),
            ("/a\"", 2, b'"'),
            ("/<x>", 1, b'<'),
            ("/a/../b c", 7, b' '), // found on the slow path too
            ("/%41\x00", 4, 0),
        ] {
            assert_eq!(
                norm(raw),
                Err(NormalizeError::InvalidByte { at, byte }),
                "{raw:?}"
            );
        }
        // Non-ASCII, valid UTF-8 or not.
        assert_eq!(
            norm("/caf\u{e9}"),
            Err(NormalizeError::InvalidByte { at: 4, byte: 0xC3 })
        );
        let mut out = String::new();
        assert_eq!(
            normalize_path(b"/a\xff", &mut out),
            Err(NormalizeError::InvalidByte { at: 2, byte: 0xFF })
        );
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        ok("/%41", "/A");
        ok("/%7euser/%2d%5F%2E%30", "/~user/-_.0");
        ok("/a%62c", "/abc");
    }

    #[test]
    fn reserved_escapes_stay_encoded_upper_case() {
        ok("/a%2fb", "/a%2Fb");
        ok("/a%2Fb", "/a%2Fb");
        ok("/%3f%23%20%25", "/%3F%23%20%25");
        ok("/%c3%a9", "/%C3%A9");
        ok("/%00", "/%00");
        // An encoded slash is not a separator, so ".." next to it is an ordinary segment.
        ok("/a/..%2fb", "/a/..%2Fb");
        ok("/a/%2e%2e%2f", "/a/..%2F");
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        for (raw, at) in [
            ("/%", 1),
            ("/a%4", 2),
            ("/a%4g", 2),
            ("/%%41", 1),
            ("/x/%zz", 3),
        ] {
            assert_eq!(norm(raw), Err(NormalizeError::BadEscape { at }), "{raw:?}");
        }
    }

    #[test]
    fn slash_runs_fold() {
        ok("//", "/");
        ok("///", "/");
        ok("/a//b///c", "/a/b/c");
        ok("//a", "/a");
        ok("/a//", "/a/");
    }

    #[test]
    fn dot_segments_resolve() {
        ok("/a/./b", "/a/b");
        ok("/./a", "/a");
        ok("/a/.", "/a/");
        ok("/a/b/.", "/a/b/");
        ok("/.", "/");
        ok("/a/..", "/");
        ok("/a/../", "/");
        ok("/a/b/..", "/a/");
        ok("/a/b/../c", "/a/c");
        ok("/a/b/../../c/", "/c/");
        ok("/a/./../b", "/b");
        ok("/a//..//b", "/b");
        ok("/public/../admin", "/admin");
    }

    #[test]
    fn encoded_dot_segments_resolve() {
        ok("/a/%2e/b", "/a/b");
        ok("/a/b/%2E%2e", "/a/");
        ok("/a/.%2e/c", "/c");
        ok("/a/%2e%2e%2e", "/a/...");
    }

    #[test]
    fn escaping_the_root_is_an_error() {
        for raw in [
            "/..",
            "/../",
            "/../a",
            "/a/../../b",
            "/a/b/../../..",
            "/%2e%2e/x",
            "/.%2E",
            "//../a",
            "/./..",
        ] {
            assert_eq!(norm(raw), Err(NormalizeError::EscapesRoot), "{raw:?}");
        }
    }

    #[test]
    fn messages_are_precise() {
        assert_eq!(
            NormalizeError::InvalidByte { at: 3, byte: b'#' }.to_string(),
            "character '#' (0x23) at offset 3 is not allowed in a path"
        );
        assert_eq!(
            NormalizeError::InvalidByte { at: 2, byte: b' ' }.to_string(),
            "byte 0x20 at offset 2 is not allowed in a path"
        );
        assert_eq!(
            NormalizeError::BadEscape { at: 5 }.to_string(),
            "malformed percent-escape at offset 5: '%' must be followed by two hex digits"
        );
        assert_eq!(
            NormalizeError::EscapesRoot.to_string(),
            "path climbs above the root with \"..\""
        );
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for raw in ["/a/./b/../c//d/", "/%41%2f%2e/x", "/a/b/%2E", "//x//"] {
            let once = norm(raw).unwrap();
            assert_eq!(norm(&once).as_deref(), Ok(once.as_str()), "{raw:?}");
        }
    }

    /// Obvious, allocating RFC 3986 5.2.4 over decoded segments, to check the fast one.
    fn reference(raw: &str) -> Result<String, NormalizeError> {
        let rest = raw.strip_prefix('/').ok_or(NormalizeError::NotAbsolute)?;
        let mut stack: Vec<String> = Vec::new();
        let mut trailing_slash = false;
        let segments: Vec<&str> = rest.split('/').collect();
        for (k, seg) in segments.iter().enumerate() {
            let mut decoded = String::new();
            let b = seg.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    let hex = seg.get(i + 1..i + 3).filter(|h| h.len() == 2);
                    let v = hex
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or(NormalizeError::BadEscape { at: 0 })?;
                    if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                        decoded.push(v as char);
                    } else {
                        decoded.push_str(&format!("%{v:02X}"));
                    }
                    i += 3;
                } else {
                    decoded.push(b[i] as char);
                    i += 1;
                }
            }
            let last = k + 1 == segments.len();
            match decoded.as_str() {
                "" | "." => trailing_slash = last,
                ".." => {
                    stack.pop().ok_or(NormalizeError::EscapesRoot)?;
                    trailing_slash = last;
                }
                _ => {
                    stack.push(decoded);
                    trailing_slash = false;
                }
            }
        }
        let mut out = format!("/{}", stack.join("/"));
        if trailing_slash && !stack.is_empty() {
            out.push('/');
        }
        Ok(out)
    }

    #[test]
    fn agrees_with_reference_on_every_short_path() {
        // Every string up to 6 bytes over an alphabet rich in slashes, dots and escapes.
        const ALPHABET: &[u8] = b"/.a%2eF4";
        let mut out = String::new();
        let mut raw = Vec::new();
        let mut checked = 0;
        for len in 0..=6u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                raw.clear();
                for _ in 0..len {
                    raw.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                let text = std::str::from_utf8(&raw).unwrap();
                let got = normalize_path(&raw, &mut out).map(|()| out.clone());
                let want = reference(text);
                let same = match (&got, &want) {
                    (Ok(g), Ok(w)) => g == w,
                    (Err(g), Err(w)) => std::mem::discriminant(g) == std::mem::discriminant(w),
                    _ => false,
                };
                assert!(same, "{text:?}: got {got:?}, want {want:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 299_593); // 8^0 + ... + 8^6
    }
}
