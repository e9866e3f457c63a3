//! The client behind trusted proxies, from `X-Forwarded-For`: each proxy appends the
//! address it took the connection from, so the list is read from the right, and the
//! client is the right-most address that is not one of ours. Everything to the left of it
//! was written by the client (or by proxies nobody vouches for) and may be made up.

use std::net::{IpAddr, SocketAddr};

use httparse::Header;

/// The client of a request whose connection came from `peer`, a trusted proxy:
/// `X-Forwarded-For` (all its lines, one list) walked right to left while the addresses
/// are trusted. The walk stops at the first untrusted address (the client) or at an entry
/// that is no address (then the last trusted hop is all that is known); with no header,
/// or only trusted addresses, the left-most trusted hop is the client.
pub fn client_behind(peer: IpAddr, headers: &[Header], trusts: impl Fn(IpAddr) -> bool) -> IpAddr {
    let mut client = peer;
    let lines = headers
        .iter()
        .rev()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"));
    for line in lines {
        for entry in line.value.rsplit(|&b| b == b',') {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !trusts(ip) {
                return client;
            }
        }
    }
    client
}

/// One list entry: an address, optionally with a port (`203.0.113.7:5123`,
/// `[2001:db8::7]:443`, as some balancers write), surrounded by optional whitespace.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => text.parse::<SocketAddr>().ok()?.ip(),
    };
    // A v4 client seen through a v6 socket is the v4 client.
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Trusts 10.0.0.0/8.
    fn ours(ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
    }

    fn client(values: &[&str]) -> IpAddr {
        let headers: Vec<Header> = values
            .iter()
            .map(|v| Header {
                name: "X-Forwarded-For",
                value: v.as_bytes(),
            })
            .collect();
        client_behind(ip("10.0.0.1"), &headers, ours)
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        assert_eq!(client(&["203.0.113.7"]), ip("203.0.113.7"));
        // The client claimed 1.2.3.4 itself; our balancer 10.0.0.2 saw 203.0.113.7.
        assert_eq!(
            client(&["1.2.3.4, 203.0.113.7, 10.0.0.2"]),
            ip("203.0.113.7")
        );
        // Several lines are one list, in order.
        assert_eq!(
            client(&["1.2.3.4", "203.0.113.7 ,10.0.0.2"]),
            ip("203.0.113.7")
        );
        assert_eq!(client(&["[2001:db8::7]:443"]), ip("2001:db8::7"));
        assert_eq!(client(&["203.0.113.7:5123"]), ip("203.0.113.7"));
        assert_eq!(client(&["::ffff:203.0.113.7"]), ip("203.0.113.7"));
    }

    #[test]
    fn without_an_untrusted_address_the_furthest_trusted_hop_is_the_client() {
        assert_eq!(client(&[]), ip("10.0.0.1"));
        assert_eq!(client(&["10.0.0.3, 10.0.0.2"]), ip("10.0.0.3"));
        // Garbage stops the walk at the last address a trusted hop vouched for.
        assert_eq!(client(&["203.0.113.7, unknown, 10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(client(&["203.0.113.7,"]), ip("10.0.0.1"));
        assert_eq!(client(&["_hidden"]), ip("10.0.0.1"));
    }
}
