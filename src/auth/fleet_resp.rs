//! The little of RESP that fleet nonce claims need: commands written as arrays of bulk
//! strings, and the replies `SET NX GET`, `AUTH` and `SELECT` give, read whole and in
//! order from a buffer. Written by hand because the claims run on the workers' event
//! loops, which the redis crate has no client for (see `fleet_nonces`).

use crate::http::headers::push_decimal;

/// A command as a RESP array of bulk strings.
pub(super) fn encode(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, parts.len() as u64);
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.push(b'$');
        push_decimal(out, p.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// The length of the first command `encode` wrote at the start of `buf`.
pub(super) fn command_len(buf: &[u8]) -> usize {
    let line_end = |from: usize| {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(buf.len(), |p| from + p + 2)
    };
    let number = |from: usize, to: usize| {
        std::str::from_utf8(&buf[from + 1..to - 2])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let mut at = line_end(0);
    for _ in 0..number(0, at) {
        let header_end = line_end(at);
        at = header_end + number(at, header_end) + 2;
    }
    at.min(buf.len())
}

/// The replies a claim or a handshake gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// `+OK`: a handshake step done.
    Ok,
    /// A nil: `SET NX GET` found no key and set it.
    Nil,
    /// A bulk string: `SET NX GET` found the key; its token when it is one (16 hex
    /// digits).
    Token(Option<u64>),
    Error,
    /// Anything else: not what these commands answer.
    Other,
}

/// Parses the reply at the start of `buf`: `None` until it is complete.
pub(super) fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")? + 2;
    let line = &buf[..end - 2];
    let reply = match line.first()? {
        b'+' if line == b"+OK" => Reply::Ok,
        b'-' => Reply::Error,
        b'$' if line == b"$-1" => Reply::Nil,
        b'_' => Reply::Nil,
        b'$' => {
            let n: usize = std::str::from_utf8(&line[1..]).ok()?.parse().ok()?;
            let value = buf.get(end..end + n)?;
            if buf.len() < end + n + 2 {
                return None;
            }
            let token = std::str::from_utf8(value)
                .ok()
                .filter(|v| v.len() == 16)
                .and_then(|v| u64::from_str_radix(v, 16).ok());
            return Some((Reply::Token(token), end + n + 2));
        }
        _ => Reply::Other,
    };
    Some((reply, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_resp_arrays() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &[b"SET", b"rg:nonce:a:n1", b"ab", b"NX", b"PX", b"301000"],
        );
        assert_eq!(
            out,
            b"*6\r\n$3\r\nSET\r\n$13\r\nrg:nonce:a:n1\r\n$2\r\nab\r\n$2\r\nNX\r\n$2\r\nPX\r\n$6\r\n301000\r\n"
        );
        let first = out.len();
        encode(&mut out, &[b"SELECT", b"3"]);
        assert_eq!(command_len(&out), first);
        assert_eq!(command_len(&out[first..]), out.len() - first);
    }

    #[test]
    fn replies_are_read_whole_and_in_order() {
        assert_eq!(parse_reply(b"+OK\r\n$-1\r\n"), Some((Reply::Ok, 5)));
        assert_eq!(parse_reply(b"$-1\r\n"), Some((Reply::Nil, 5)));
        assert_eq!(parse_reply(b"_\r\n"), Some((Reply::Nil, 3)));
        assert_eq!(
            parse_reply(b"-NOAUTH Authentication required.\r\n"),
            Some((Reply::Error, 34))
        );
        assert_eq!(
            parse_reply(b"$3\r\nabc\r\n+OK"),
            Some((Reply::Token(None), 9))
        );
        assert_eq!(
            parse_reply(b"$16\r\n00000000000000ff\r\n"),
            Some((Reply::Token(Some(255)), 23))
        );
        assert_eq!(parse_reply(b"$3\r\nab"), None);
        assert_eq!(parse_reply(b"$3\r\nabc\r"), None);
        assert_eq!(parse_reply(b"+OK\r"), None);
        assert_eq!(parse_reply(b""), None);
    }
}
