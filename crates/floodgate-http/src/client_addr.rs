//! Who is on the other end of a connection.

use std::net::IpAddr;

use http::HeaderValue;

/// The client of a connection, put on each of its requests by the server: its IP address as
/// text, for `X-Forwarded-For` and per-IP limits, written once per connection rather than
/// formatted per request; and whether it is a proxy the shop trusts (`server.trusted_proxies`),
/// whose forwarding headers are believed; and whether it connected over TLS.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    address: IpAddr,
    ip: HeaderValue,
    trusted_proxy: bool,
    tls: bool,
}

impl ClientAddr {
    /// The client at `ip`, not trusted.
    pub fn new(ip: IpAddr) -> Self {
        let text =
            HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value");
        Self {
            address: ip,
            ip: text,
            trusted_proxy: false,
            tls: false,
        }
    }

    /// The same client, connected over TLS when `tls` is true.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Whether it connected over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The same client, trusted as a proxy when its address is in one of `trusted`.
    pub fn trusted_if_in(mut self, trusted: &[ipnet::IpNet]) -> Self {
        self.trusted_proxy = trusted
            .iter()
            .any(|network| network.contains(&self.address));
        self
    }

    /// The IP address, as text.
    pub fn ip(&self) -> &HeaderValue {
        &self.ip
    }

    /// Whether its forwarding headers are believed.
    pub fn is_trusted_proxy(&self) -> bool {
        self.trusted_proxy
    }
}
