//! Who the client is, behind a load balancer.
//!
//! A node behind haproxy or nginx sees the proxy's address on every connection. Per-IP limits
//! then have to use the address the proxy reports in `X-Forwarded-For` — but only from proxies
//! the operator named (`ATELIER_TRUSTED_PROXIES`), or anyone could claim any address. The
//! header is read from the right: the last entry not added by a trusted proxy is the client.

use std::net::IpAddr;
use std::str::FromStr;

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed (`ATELIER_TRUSTED_PROXIES`: addresses or
/// CIDR ranges, comma-separated). Empty: the socket's peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{part:?} is neither an IP address nor a CIDR range"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer` itself unless `peer` is a trusted proxy, in which case the
    /// rightmost `X-Forwarded-For` entry that is not a trusted proxy (or `peer` when the header
    /// is missing or malformed).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .map_while(|entry| entry.parse::<IpAddr>().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .copied()
            .find(|ip| !self.trusts(*ip))
            .or_else(|| forwarded.first().copied())
            .unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let trusted: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        // Through the proxy: the entry it appended.
        assert_eq!(trusted.client_ip(proxy, &headers(&["203.0.113.7"])), client);
        // A client forging its own header in front of the proxy: the proxy's entry wins.
        assert_eq!(
            trusted.client_ip(proxy, &headers(&["1.2.3.4, 203.0.113.7"])),
            client
        );
        // Two proxies in a row.
        assert_eq!(
            trusted.client_ip(proxy, &headers(&["203.0.113.7", "10.1.2.3"])),
            client
        );
        // Not through a trusted proxy: the header is ignored.
        assert_eq!(
            trusted.client_ip(stranger, &headers(&["1.2.3.4"])),
            stranger
        );
        // Garbage or no header: the peer.
        assert_eq!(trusted.client_ip(proxy, &headers(&["not an ip"])), proxy);
        assert_eq!(trusted.client_ip(proxy, &HeaderMap::new()), proxy);
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::default()
        );
    }
}
