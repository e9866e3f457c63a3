//! The request as filters see it, whatever protocol carried it: method, authority,
//! normalized path, query, headers and client address. HTTP/1.1 heads, HTTP/2 streams and
//! WebSocket upgrades all present this view, so one chain serves them all.

use std::net::IpAddr;

use httparse::Header;

/// A request head, borrowed from wherever its protocol keeps it.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The Host (HTTP/1.1) or `:authority` (HTTP/2); empty when the client sent none.
    pub authority: &'a [u8],
    /// Normalized (see `http::normalize`): every route and ACL decision is made on it.
    pub path: &'a str,
    /// The raw query after '?' (`None`: the target had no '?').
    pub query: Option<&'a str>,
    pub headers: &'a [Header<'a>],
    /// The client: the connection's peer, or the address a trusted proxy forwarded for.
    pub client_ip: IpAddr,
    /// `client_ip` as text.
    pub client_ip_text: &'a str,
    /// The address the connection came from (its TCP peer, or the client a PROXY
    /// protocol header named), as text.
    pub peer_text: &'a str,
    /// The peer is a trusted proxy (`server.trusted_proxies`): its forwarding headers
    /// (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are believed.
    pub peer_trusted: bool,
    /// `http` or `https`: how the client reached the gateway, as far as it knows itself
    /// (its listener, or the TLS a PROXY protocol header reported).
    pub scheme: &'static str,
    /// The request carries a body (it may be empty, as with `Content-Length: 0`).
    pub has_body: bool,
}

impl<'a> RequestView<'a> {
    /// The value of the one header named `name` (the first when repeated).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// A copy of a request head that outlives its protocol's buffer: taken only when a
/// filter needs the body before the chain can go on (a signature over the body), since
/// the head's bytes are consumed before the body is read.
pub struct OwnedRequest {
    method: String,
    authority: Vec<u8>,
    path: String,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    client_ip: IpAddr,
    client_ip_text: String,
    peer_text: String,
    peer_trusted: bool,
    scheme: &'static str,
    has_body: bool,
}

impl OwnedRequest {
    pub fn copy(view: &RequestView) -> OwnedRequest {
        OwnedRequest {
            method: view.method.to_string(),
            authority: view.authority.to_vec(),
            path: view.path.to_string(),
            query: view.query.map(str::to_string),
            headers: view
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            client_ip: view.client_ip,
            client_ip_text: view.client_ip_text.to_string(),
            peer_text: view.peer_text.to_string(),
            peer_trusted: view.peer_trusted,
            scheme: view.scheme,
            has_body: view.has_body,
        }
    }

    /// The header list in the form a view borrows (built by the caller, who keeps it).
    pub fn header_list(&self) -> Vec<Header<'_>> {
        self.headers
            .iter()
            .map(|(name, value)| Header { name, value })
            .collect()
    }

    pub fn view<'a>(&'a self, headers: &'a [Header<'a>]) -> RequestView<'a> {
        RequestView {
            method: &self.method,
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            headers,
            client_ip: self.client_ip,
            client_ip_text: &self.client_ip_text,
            peer_text: &self.peer_text,
            peer_trusted: self.peer_trusted,
            scheme: self.scheme,
            has_body: self.has_body,
        }
    }
}
