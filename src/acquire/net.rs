//! How the hub client reaches the network: the proxy variables of the environment
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, as curl and Python's `requests` read
//! them) and the certificates it trusts (the system's store — `SSL_CERT_FILE`/`SSL_CERT_DIR` or
//! the distribution's bundle, where a corporate CA is installed — besides Mozilla's roots compiled
//! in). The only place that builds `ureq` agents for the hub. Never prints.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Result};

/// The proxy settings of the environment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proxies {
    /// For `https://` URLs: `https_proxy`, `HTTPS_PROXY`, else `all_proxy`, `ALL_PROXY`.
    pub https: Option<String>,
    /// For `http://` URLs: `http_proxy`, `HTTP_PROXY`, else `all_proxy`, `ALL_PROXY`.
    pub http: Option<String>,
    /// `no_proxy`/`NO_PROXY`: hosts reached directly (`*`, `host`, `.domain`, `host:port`, an IP
    /// address or an IP range `10.0.0.0/8`).
    pub no_proxy: Vec<String>,
}

fn var(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        std::env::var(n)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

impl Proxies {
    /// Reads the proxy variables (lower case first, as curl does).
    pub fn from_env() -> Self {
        let all = var(&["all_proxy", "ALL_PROXY"]);
        Proxies {
            https: var(&["https_proxy", "HTTPS_PROXY"]).or_else(|| all.clone()),
            http: var(&["http_proxy", "HTTP_PROXY"]).or(all),
            no_proxy: var(&["no_proxy", "NO_PROXY"])
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The proxy for `url`, or `None` to connect directly.
    pub fn for_url(&self, url: &str) -> Option<&str> {
        let u = url::Url::parse(url).ok()?;
        let proxy = match u.scheme() {
            "https" => self.https.as_deref(),
            "http" => self.http.as_deref(),
            _ => None,
        }?;
        let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
        let port = u.port_or_known_default().unwrap_or(0);
        (!bypassed(&self.no_proxy, host, port)).then_some(proxy)
    }
}

/// Whether `NO_PROXY`'s entries send `host:port` around the proxy.
fn bypassed(entries: &[String], host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    entries.iter().any(|e| {
        let e = e.trim().to_ascii_lowercase();
        if e == "*" {
            return true;
        }
        // `host:port`, `[v6]:port` (a bare IPv6 address has colons of its own)
        let (name, want_port) = match e.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                (h.to_string(), p.parse::<u16>().ok())
            }
            _ => (e.clone(), None),
        };
        if want_port.is_some_and(|p| p != port) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if let Some((net, bits)) = name.split_once('/') {
            return in_range(&host, net, bits);
        }
        let name = name.trim_start_matches("*.").trim_start_matches('.');
        !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
    })
}

/// Whether the address `host` lies in `net/bits` (a host name never does).
fn in_range(host: &str, net: &str, bits: &str) -> bool {
    let (Ok(h), Ok(n), Ok(bits)) = (
        host.parse::<IpAddr>(),
        net.parse::<IpAddr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    match (h, n) {
        (IpAddr::V4(h), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(h) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(h), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(h) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The certificates the hub client trusts: Mozilla's roots (compiled in) and the system's store
/// (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the distribution's bundle), read once.
fn tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            // certificates the store could not parse are skipped, as curl does
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// The `ureq` agents of a hub client: one direct, one per proxy the environment names.
pub struct Agents {
    proxies: Proxies,
    direct: ureq::Agent,
    /// Per proxy URL, its agent or why it cannot be used.
    via: Vec<(String, Result<ureq::Agent, String>)>,
}

fn builder() -> ureq::AgentBuilder {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("quantbench/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls())
}

impl Agents {
    pub fn new(proxies: Proxies) -> Self {
        let mut via: Vec<(String, Result<ureq::Agent, String>)> = Vec::new();
        for p in [&proxies.https, &proxies.http].into_iter().flatten() {
            if via.iter().any(|(u, _)| u == p) {
                continue;
            }
            // ureq parses socks URLs but this build cannot use them: only http:// (or a bare
            // host:port, which means http)
            let scheme = p.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            let agent = if scheme.as_deref().is_some_and(|s| s != "http") {
                Err(format!(
                    "{}:// proxies are not supported",
                    scheme.unwrap_or_default()
                ))
            } else {
                ureq::Proxy::new(p)
                    .map(|proxy| builder().proxy(proxy).build())
                    .map_err(|e| e.to_string())
            };
            via.push((p.clone(), agent));
        }
        Agents {
            proxies,
            direct: builder().build(),
            via,
        }
    }

    /// The agent for `url`: through its proxy, or direct. A proxy variable that is not an
    /// `http://` proxy URL is an error naming the variable's value (without its userinfo).
    pub fn for_url(&self, url: &str) -> Result<&ureq::Agent> {
        let Some(proxy) = self.proxies.for_url(url) else {
            return Ok(&self.direct);
        };
        match self.via.iter().find(|(u, _)| u == proxy).map(|(_, a)| a) {
            Some(Ok(a)) => Ok(a),
            Some(Err(e)) => Err(anyhow!(
                "the proxy {} (HTTPS_PROXY/HTTP_PROXY/ALL_PROXY) cannot be used: {e}; give an \
                 http:// proxy as http://[user:password@]host:port, or add the hub's host to \
                 NO_PROXY",
                crate::redact::strip_userinfo(proxy)
            )),
            None => Ok(&self.direct),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(no_proxy: &[&str]) -> Proxies {
        Proxies {
            https: Some("http://proxy:3128".into()),
            http: Some("http://plain-proxy:3128".into()),
            no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_proxy_goes_by_scheme_and_no_proxy_bypasses_it() {
        let p = proxies(&[]);
        assert_eq!(
            p.for_url("https://huggingface.co/x"),
            Some("http://proxy:3128")
        );
        assert_eq!(
            p.for_url("http://mirror:8080/x"),
            Some("http://plain-proxy:3128")
        );
        for (no_proxy, url, direct) in [
            (&["*"][..], "https://huggingface.co/x", true),
            (&["huggingface.co"][..], "https://huggingface.co/x", true),
            (
                &["huggingface.co"][..],
                "https://cdn-lfs.huggingface.co/x",
                true,
            ),
            (
                &[".huggingface.co"][..],
                "https://cdn-lfs.huggingface.co/x",
                true,
            ),
            (
                &["*.huggingface.co"][..],
                "https://cdn.huggingface.co/x",
                true,
            ),
            // a suffix of the name is not its domain
            (&["face.co"][..], "https://huggingface.co/x", false),
            (&["HuggingFace.CO"][..], "https://huggingface.co/x", true),
            (&["127.0.0.1"][..], "http://127.0.0.1:9/x", true),
            (&["127.0.0.1:9"][..], "http://127.0.0.1:9/x", true),
            (&["127.0.0.1:8"][..], "http://127.0.0.1:9/x", false),
            (&["10.0.0.0/8"][..], "http://10.1.2.3/x", true),
            (&["10.0.0.0/8"][..], "http://11.1.2.3/x", false),
            (&["::1"][..], "http://[::1]:9/x", true),
            (&["fd00::/8"][..], "http://[fd12::1]/x", true),
            (&["other.example"][..], "https://huggingface.co/x", false),
        ] {
            assert_eq!(
                proxies(no_proxy).for_url(url).is_none(),
                direct,
                "{no_proxy:?} {url}"
            );
        }
        assert_eq!(Proxies::default().for_url("https://h/x"), None);
    }

    #[test]
    fn an_unusable_proxy_is_named_without_its_password() {
        for proxy in [
            "ftp://user:secret@proxy:21",
            "socks5://user:secret@proxy:1080",
        ] {
            let a = Agents::new(Proxies {
                https: Some(proxy.into()),
                ..Proxies::default()
            });
            let e = a
                .for_url("https://huggingface.co/x")
                .unwrap_err()
                .to_string();
            let shown = proxy.replace("user:secret@", "");
            assert!(e.contains(&shown) && !e.contains("secret"), "{e}");
            assert!(
                a.for_url("http://mirror/x").is_ok(),
                "no http proxy: direct"
            );
        }
        // a bare host:port is an http proxy
        let a = Agents::new(Proxies {
            https: Some("proxy:3128".into()),
            ..Proxies::default()
        });
        assert!(a.for_url("https://huggingface.co/x").is_ok());
    }
}
