//! airlock's own HTTP clients: the vault's to OAuth providers, and the TLS
//! a proxy uses to reach a remote vault. Built from plain config values
//! (`Outbound`), not from the proxy's internals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_vault_client::normalize_host;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::config::{Outbound, ResolveEntry};
use crate::Error;

/// Verified TLS: the system roots plus `extra` (`upstream_ca`).
pub fn tls_config(extra: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(target: crate::LOG_TARGET, %error, "could not load some system root certificates");
    }
    roots.add_parsable_certificates(native.certs);
    for cert in extra {
        if let Err(error) = roots.add(cert.clone()) {
            tracing::warn!(target: crate::LOG_TARGET, %error, "an upstream_ca certificate was not usable");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The client the vault uses to reach OAuth providers: verified TLS, the
/// operator's `[resolve]` overrides, never an environment proxy, never
/// following redirects.
pub fn provider_client(outbound: &Outbound) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(&outbound.extra_roots))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .dns_resolver(Arc::new(OverrideResolver(outbound.resolve.clone())))
        .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Error::ProviderClient)
}

/// `[resolve]` for the vault's own requests; other names go to the system resolver.
struct OverrideResolver(Vec<ResolveEntry>);

impl OverrideResolver {
    fn lookup(&self, name: &str) -> Option<SocketAddr> {
        let host = normalize_host(name).unwrap_or_default();
        self.0
            .iter()
            .find(|e| e.host.matches(&host))
            .map(|e| SocketAddr::new(e.ip, e.port.unwrap_or(0)))
    }
}

impl reqwest::dns::Resolve for OverrideResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        if let Some(addr) = self.lookup(name.as_str()) {
            return Box::pin(
                async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) },
            );
        }
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_vault_client::HostPattern;

    fn entry(host: &str, ip: [u8; 4], port: Option<u16>) -> ResolveEntry {
        ResolveEntry {
            host: HostPattern::parse(host).unwrap(),
            ip: ip.into(),
            port,
        }
    }

    #[test]
    fn the_first_matching_override_wins() {
        let r = OverrideResolver(vec![
            entry("api.github.test", [127, 0, 0, 2], Some(8443)),
            entry("*.github.test", [127, 0, 0, 3], None),
        ]);
        assert_eq!(
            r.lookup("API.github.test."),
            Some("127.0.0.2:8443".parse().unwrap())
        );
        assert_eq!(
            r.lookup("x.github.test"),
            Some("127.0.0.3:0".parse().unwrap())
        );
        assert_eq!(r.lookup("example.com"), None);
    }
}
