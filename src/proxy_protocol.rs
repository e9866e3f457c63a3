//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends
//! first on each connection, naming the client it accepted the connection from. Only on
//! listeners that enable it (`proxy_protocol = true`), where every connection must start
//! with one: a connection without it, or with a malformed one, is refused, since
//! anything else would let a client name its own address.
//!
//! Pure parsing, no I/O: the connection driver feeds the first bytes in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v1 header's longest form (`PROXY TCP6 <39> <39> 65535 65535\r\n`), per the spec.
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v2 header's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The most address and TLV bytes accepted after the fixed part: addresses take at most
/// 216 (unix), and balancers' TLVs (ALPN, authority, SSL, cloud endpoint ids) a few
/// hundred; more is no header a balancer sends.
const V2_MAX_REST: usize = 4096;
/// v2 TLV types read here.
const PP2_TYPE_SSL: u8 = 0x20;
/// In a `PP2_TYPE_SSL` TLV: the client connected over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preface {
    /// The header's length: the connection's own bytes start after it.
    pub len: usize,
    /// The client's address; `None` when the header names none (a v1 `UNKNOWN`, a v2
    /// `LOCAL` health check from the balancer itself, a unix or unspecified family): the
    /// connection's peer is then the client.
    pub source: Option<SocketAddr>,
    /// The balancer says the client's connection used TLS (v2 `PP2_CLIENT_SSL`).
    pub client_tls: bool,
}

/// Why the first bytes are no PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefaceError {
    /// The connection starts with something else (a client talking to the listener
    /// directly).
    Missing,
    /// It starts like one but breaks the format.
    Malformed(&'static str),
}

impl std::fmt::Display for PrefaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefaceError::Missing => {
                f.write_str("the connection did not start with a PROXY protocol header")
            }
            PrefaceError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` while more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Preface>, PrefaceError> {
    if starts_like(buf, V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(PrefaceError::Missing)
    }
}

/// `buf` is `prefix`, or the start of it, or starts with it.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<Preface>, PrefaceError> {
    let line = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = line.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(PrefaceError::Malformed("v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    if lf == 0 || line[lf - 1] != b'\r' {
        return Err(PrefaceError::Malformed("v1 header must end with CRLF"));
    }
    let end = lf - 1;
    let len = end + 2;
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end])
        .map_err(|_| PrefaceError::Malformed("v1 header is not text"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The balancer could not tell (the spec lets it say no more): the peer stands.
        return Ok(Some(Preface {
            len,
            source: None,
            client_tls: false,
        }));
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(PrefaceError::Malformed(
                "v1 family must be TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(PrefaceError::Malformed(
            "v1 header must name source, destination and both ports, one space apart",
        ));
    };
    let address = |text: &str| -> Result<IpAddr, PrefaceError> {
        let ip = if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| PrefaceError::Malformed("v1 address does not match its family"))
    };
    let port = |text: &str| -> Result<u16, PrefaceError> {
        // Decimal without a sign or leading zeros, as the spec writes them.
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match text.parse::<u16>() {
            Ok(p) if canonical => Ok(p),
            _ => Err(PrefaceError::Malformed("v1 port must be a number 0-65535")),
        }
    };
    let source = SocketAddr::new(address(src)?, port(sport)?);
    address(dst)?;
    port(dport)?;
    Ok(Some(Preface {
        len,
        source: Some(source),
        client_tls: false,
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Preface>, PrefaceError> {
    if buf.len() < V2_FIXED {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(PrefaceError::Malformed("v2 version must be 2"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(PrefaceError::Malformed("v2 command must be LOCAL or PROXY")),
    };
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if rest > V2_MAX_REST {
        return Err(PrefaceError::Malformed("v2 header longer than 4096 bytes"));
    }
    let len = V2_FIXED + rest;
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[V2_FIXED..len];
    // The addresses' length by family: inet, inet6, unix (0: unspecified).
    let addresses = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(PrefaceError::Malformed("v2 address family unknown")),
    };
    if body.len() < addresses {
        return Err(PrefaceError::Malformed(
            "v2 header too short for its addresses",
        ));
    }
    let source = match family {
        _ if local => None,
        // Only stream connections are proxied to an HTTP listener.
        1 | 2 if transport != 1 => {
            return Err(PrefaceError::Malformed("v2 transport must be STREAM"))
        }
        1 => {
            let ip: [u8; 4] = body[0..4].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([body[8], body[9]]);
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        2 => {
            let ip: [u8; 16] = body[0..16].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        // Unix sockets and unspecified: nothing to say about the client.
        _ => None,
    };
    Ok(Some(Preface {
        len,
        source,
        client_tls: client_tls(&body[addresses..])?,
    }))
}

/// Walks the TLVs after the addresses for the SSL one.
fn client_tls(mut tlvs: &[u8]) -> Result<bool, PrefaceError> {
    let mut tls = false;
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(PrefaceError::Malformed("v2 TLV cut short"));
        }
        let kind = tlvs[0];
        let n = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        let Some(value) = tlvs.get(3..3 + n) else {
            return Err(PrefaceError::Malformed("v2 TLV longer than the header"));
        };
        if kind == PP2_TYPE_SSL {
            tls = value
                .first()
                .is_some_and(|client| client & PP2_CLIENT_SSL != 0);
        }
        tlvs = &tlvs[3 + n..];
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(text: &str) -> Result<Option<Preface>, PrefaceError> {
        parse(text.as_bytes())
    }

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    const INET: &[u8] = &[203, 0, 113, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80];

    #[test]
    fn v1_names_the_client() {
        let p = v1("PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\nGET /").unwrap();
        assert_eq!(
            p,
            Some(Preface {
                len: 42,
                source: Some("203.0.113.7:51000".parse().unwrap()),
                client_tls: false
            })
        );
        let p = v1("PROXY TCP6 2001:db8::7 2001:db8::1 443 8080\r\n").unwrap();
        assert_eq!(
            p.unwrap().source,
            Some("[2001:db8::7]:443".parse().unwrap())
        );
        let p = v1("PROXY UNKNOWN whatever\r\n").unwrap().unwrap();
        assert_eq!((p.len, p.source), (24, None));
    }

    #[test]
    fn v1_waits_for_the_line_end_and_refuses_broken_lines() {
        assert_eq!(v1(""), Ok(None));
        assert_eq!(v1("PRO"), Ok(None));
        assert_eq!(v1("PROXY TCP4 203.0.113.7 10.0.0.1 51000 80"), Ok(None));
        assert_eq!(v1("GET / HTTP/1.1\r\n"), Err(PrefaceError::Missing));
        for broken in [
            "PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n",
            "PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n",
            "PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n",
            "PROXY TCP4  1.2.3.4 1.2.3.5 1 2\r\n",
            "PROXY TCP4 ::1 1.2.3.5 1 2\r\n",
            "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            "PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n",
            "PROXY TCP4 1.2.3.4 1.2.3.5 +1 2\r\n",
            "PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n",
            "PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n",
        ] {
            assert!(
                matches!(v1(broken), Err(PrefaceError::Malformed(_))),
                "{broken:?}"
            );
        }
        let long = format!("PROXY TCP4 {}", "1".repeat(120));
        assert!(matches!(v1(&long), Err(PrefaceError::Malformed(_))));
    }

    #[test]
    fn v2_names_the_client_and_its_tls() {
        let p = parse(&v2(1, 0x11, INET, &[])).unwrap().unwrap();
        assert_eq!(p.source, Some("203.0.113.7:8080".parse().unwrap()));
        assert_eq!((p.len, p.client_tls), (28, false));

        let mut inet6 = vec![0u8; 36];
        inet6[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        inet6[32..34].copy_from_slice(&443u16.to_be_bytes());
        // An SSL TLV (client flags, verify, no sub-TLVs) after an unrelated ALPN one.
        let tlvs = [
            &[0x01, 0, 2][..],
            b"h2",
            &[PP2_TYPE_SSL, 0, 5, 0x01, 0, 0, 0, 0],
        ]
        .concat();
        let mut bytes = v2(1, 0x21, &inet6, &tlvs);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let p = parse(&bytes).unwrap().unwrap();
        assert_eq!(p.source, Some("[2001:db8::7]:443".parse().unwrap()));
        assert!(p.client_tls);
        assert_eq!(p.len, 16 + 36 + tlvs.len());

        // LOCAL (the balancer's own health check): the peer stands.
        let p = parse(&v2(0, 0x11, INET, &[])).unwrap().unwrap();
        assert_eq!(p.source, None);
        let p = parse(&v2(1, 0x00, &[], &[])).unwrap().unwrap();
        assert_eq!(p.source, None);
    }

    #[test]
    fn v2_waits_for_its_length_and_refuses_broken_headers() {
        let whole = v2(1, 0x11, INET, &[]);
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        let mut wrong_version = whole.clone();
        wrong_version[12] = 0x11;
        let mut wrong_command = whole.clone();
        wrong_command[12] = 0x22;
        let mut datagram = whole.clone();
        datagram[13] = 0x12;
        let mut family = whole.clone();
        family[13] = 0x41;
        for broken in [
            wrong_version,
            wrong_command,
            datagram,
            family,
            v2(1, 0x21, INET, &[]),
            v2(1, 0x11, INET, &[PP2_TYPE_SSL, 0, 9, 1]),
            v2(1, 0x11, INET, &[PP2_TYPE_SSL, 0]),
        ] {
            assert!(
                matches!(parse(&broken), Err(PrefaceError::Malformed(_))),
                "{broken:?}"
            );
        }
        let mut huge = whole[..14].to_vec();
        huge.extend_from_slice(&5000u16.to_be_bytes());
        assert!(matches!(parse(&huge), Err(PrefaceError::Malformed(_))));
    }
}
