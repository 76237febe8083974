//! The interception side of TLS: one server configuration template, cloned
//! once per leaf with a resolver that serves the CONNECT host's leaf, and
//! shared by that host's connections.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The first byte of every TLS connection: a handshake record.
pub(crate) const HANDSHAKE_RECORD: u8 = 0x16;

/// Serves one already-minted leaf, whatever the ClientHello asks for: the SNI
/// was checked against the CONNECT host before the handshake went on.
#[derive(Debug)]
pub(crate) struct FixedCert(pub Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

pub(crate) fn interception_template() -> rustls::ServerConfig {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first: as safe as AES-256 here and measurably cheaper per byte.
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            _ => 3,
        });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCert));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    config
}

/// Hosts whose server configuration is kept; past this they start again.
const MAX_CONFIGS: usize = 4096;

/// One server configuration per host's current leaf. A connection holds its
/// configuration for life: one each cost every idle connection its own copy
/// (and every handshake the copying).
pub(crate) struct LeafConfigs {
    template: rustls::ServerConfig,
    by_host: dashmap::DashMap<String, (Arc<CertifiedKey>, Arc<rustls::ServerConfig>)>,
}

impl LeafConfigs {
    pub fn new(template: rustls::ServerConfig) -> Self {
        Self {
            template,
            by_host: dashmap::DashMap::new(),
        }
    }

    /// The configuration serving `leaf` for `host`: the kept one while the
    /// leaf cache still gives the same leaf, a new one when it was reminted.
    pub fn for_leaf(&self, host: &str, leaf: Arc<CertifiedKey>) -> Arc<rustls::ServerConfig> {
        if let Some(kept) = self.by_host.get(host) {
            if Arc::ptr_eq(&kept.0, &leaf) {
                return kept.1.clone();
            }
        }
        let mut config = self.template.clone();
        config.cert_resolver = Arc::new(FixedCert(leaf.clone()));
        let config = Arc::new(config);
        if self.by_host.len() >= MAX_CONFIGS && !self.by_host.contains_key(host) {
            self.by_host.clear();
        }
        self.by_host.insert(host.to_owned(), (leaf, config.clone()));
        config
    }
}

#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(host: &str) -> Arc<CertifiedKey> {
        let ca = airlock_certs::CertificateAuthority::generate("test CA").unwrap();
        Arc::new(ca.mint_leaf(host).unwrap())
    }

    #[test]
    fn a_hosts_connections_share_one_config_until_its_leaf_changes() {
        let configs = LeafConfigs::new(interception_template());
        let first = leaf("a.test");
        let one = configs.for_leaf("a.test", first.clone());
        let two = configs.for_leaf("a.test", first.clone());
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(
            one.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        // Another host, and a reminted leaf, get their own.
        let other = configs.for_leaf("b.test", leaf("b.test"));
        assert!(!Arc::ptr_eq(&one, &other));
        let new_leaf = leaf("a.test");
        let reminted = configs.for_leaf("a.test", new_leaf.clone());
        assert!(!Arc::ptr_eq(&one, &reminted));
        assert!(Arc::ptr_eq(
            &reminted,
            &configs.for_leaf("a.test", new_leaf)
        ));
    }
}
