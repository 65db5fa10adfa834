//! The server-side request forgery guard for URLs a tenant gives the server to call
//! (MCP servers today): internal addresses are refused unless an operator allows private
//! networks, and a call connects only to the addresses that were checked, following
//! same-origin redirects only.

use std::net::SocketAddr;

/// True for addresses a tenant must not make the server call when private networks are
/// off: loopback, private, link-local, unique-local, unspecified, multicast, and the
/// cloud metadata range.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // CGNAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// Where a call may go: the URL, and the addresses its host name resolved to when
/// they were checked. The connection is made to exactly those addresses, so a name that
/// answers a public address to the check and an internal one a moment later (DNS
/// rebinding) cannot steer the call inside.
#[derive(Clone, Debug)]
pub struct Destination {
    url: String,
    pinned: Option<(String, Vec<SocketAddr>)>,
}

impl Destination {
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Refuses a URL whose host resolves to an internal address, unless allowed. Checked at
/// registration and before every call (a name can be re-pointed after registration);
/// the call then connects only to the addresses checked here.
pub async fn check_destination(
    url: &str,
    allow_private: bool,
) -> std::result::Result<Destination, String> {
    let open = Destination {
        url: url.to_owned(),
        pinned: None,
    };
    if allow_private {
        return Ok(open);
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (addrs, name): (Vec<SocketAddr>, bool) = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => (vec![SocketAddr::new(ip, port)], false),
        Err(_) => (
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect(),
            true,
        ),
    };
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if let Some(a) = addrs.iter().find(|a| is_internal(a.ip())) {
        return Err(format!(
            "{host} resolves to an internal address ({}); addresses a company gives (MCP servers, webhooks) must be on the public internet here (an operator can set OCSUITE_MCP_ALLOW_PRIVATE_NETWORKS=true)",
            a.ip()
        ));
    }
    Ok(Destination {
        pinned: name.then(|| (host.to_owned(), addrs)),
        ..open
    })
}

/// Same-origin 307/308 redirects only (they keep the JSON-RPC body, and stay on the
/// checked host), at most 5; anything else comes back as the redirect response.
fn same_origin_redirects(origin: reqwest::Url) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let same = attempt.url().origin() == origin.origin();
        let keeps_body = matches!(attempt.status().as_u16(), 307 | 308);
        if same && keeps_body && attempt.previous().len() < 5 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The HTTP client for one destination: its host name resolves only to the checked
/// addresses. No idle pooling: each call opens its own session.
pub fn http_client(dest: &Destination) -> std::result::Result<reqwest::Client, String> {
    let origin = reqwest::Url::parse(&dest.url).map_err(|e| format!("not a URL: {e}"))?;
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(same_origin_redirects(origin));
    if let Some((host, addrs)) = &dest.pinned {
        b = b.resolve_to_addrs(host, addrs);
    }
    b.build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    /// The client for a checked destination connects to the checked addresses, never
    /// resolving the name again: `mcp.invalid` cannot resolve, yet the request arrives.
    #[tokio::test]
    async fn a_checked_destination_connects_only_to_its_checked_addresses() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = sock.read(&mut buf).await.unwrap();
            sock.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let url = format!("http://mcp.invalid:{}/mcp", addr.port());
        let dest = Destination {
            url: url.clone(),
            pinned: Some(("mcp.invalid".into(), vec![addr])),
        };
        let res = http_client(&dest).unwrap().get(&url).send().await.unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::NO_CONTENT);
        let request = server.await.unwrap();
        assert!(request.contains("host: mcp.invalid"), "{request}");
        // Without the pin the same name does not resolve at all.
        let open = Destination {
            url: url.clone(),
            pinned: None,
        };
        assert!(http_client(&open).unwrap().get(&url).send().await.is_err());
    }

    #[tokio::test]
    async fn destinations_on_internal_addresses_are_refused_unless_allowed() {
        assert!(
            check_destination("http://127.0.0.1:9/mcp", false)
                .await
                .is_err()
        );
        assert!(
            check_destination("http://[::1]:9/mcp", false)
                .await
                .is_err()
        );
        assert!(
            check_destination("http://localhost:9/mcp", false)
                .await
                .is_err()
        );
        assert!(
            check_destination("http://127.0.0.1:9/mcp", true)
                .await
                .is_ok()
        );
        assert!(check_destination("http://8.8.8.8/mcp", false).await.is_ok());
    }
}
