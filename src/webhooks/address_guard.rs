//! Where webhooks may go. A job's webhook URL is chosen by whoever runs the job, so without a
//! guard it could make the server call its own network (cloud metadata at 169.254.169.254, an
//! admin port on localhost, a database on 10.x). Unless the operator allows it
//! (`ATELIER_WEBHOOK_ALLOW_PRIVATE`), deliveries go to public addresses only — checked on the
//! address actually connected to (a resolver that drops the others), so a name that resolves to
//! a private address at delivery time (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http_client::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return is_public_v4(v4);
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240) // reserved
}

/// A DNS resolver that keeps only public addresses (an error when none is left).
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (private, loopback and link-local \
                     addresses are refused)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Checks a webhook URL's host before anything is sent: a literal address must be public (the
/// resolver is not asked for those), and a name must resolve to public addresses only.
pub async fn check_host(url: &http_client::Url) -> Result<(), String> {
    match url.host() {
        None => Err("the webhook URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => public_or(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => public_or(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let lookup = tokio::net::lookup_host((name, 0));
            let found: Vec<SocketAddr> =
                match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
                    Ok(Ok(found)) => found.collect(),
                    Ok(Err(e)) => {
                        return Err(format!("the webhook host {name} does not resolve: {e}"))
                    }
                    Err(_) => return Err(format!("resolving the webhook host {name} timed out")),
                };
            if found.is_empty() {
                return Err(format!("the webhook host {name} has no address"));
            }
            match found.iter().find(|a| !is_public(a.ip())) {
                Some(private) => Err(format!(
                    "the webhook host {name} resolves to {}, a private, loopback or link-local \
                     address; webhooks go to public addresses only",
                    private.ip()
                )),
                None => Ok(()),
            }
        }
    }
}

fn public_or(ip: IpAddr) -> Result<(), String> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "{ip} is a private, loopback or link-local address; webhooks go to public addresses only"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!is_public(ip), "{refused} should be refused");
        }
        for allowed in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            let ip: IpAddr = allowed.parse().unwrap();
            assert!(is_public(ip), "{allowed} should be allowed");
        }
    }
}
