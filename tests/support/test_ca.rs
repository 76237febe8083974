#![allow(dead_code)] // each integration-test binary uses only part of the fixtures

//! A throwaway certificate authority for the *upstream* servers used in tests.
//!
//! It is independent of airlock's own interception CA: airlock is told to trust
//! it as an extra upstream root via [`TestCa::cert_pem_path`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
    pem_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// Generates a fresh P-256 CA and writes its certificate (PEM) to a temp file.
    pub fn new() -> TestCa {
        let (cert, key) = generate_ca("airlock test upstream CA");
        let dir = tempfile::tempdir().expect("create temp dir for test CA");
        let pem_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&pem_path, cert.pem()).expect("write test CA pem");
        TestCa {
            cert,
            key,
            pem_path,
            _dir: dir,
        }
    }

    /// PEM file holding the CA certificate; lives as long as `self`.
    pub fn cert_pem_path(&self) -> &Path {
        &self.pem_path
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server config presenting a fresh leaf for `names` (DNS names or IP
    /// literals) signed by this CA, advertising `alpn` in order.
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        server_config_signed_by(&self.cert, &self.key, names, alpn)
    }

    /// A fresh leaf for `names` signed by this CA, as PEM (certificate, PKCS#8
    /// key), for servers outside this process.
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let (leaf, key) = leaf_signed_by(&self.cert, &self.key, names);
        (leaf.pem(), key.serialize_pem())
    }

    /// A server config whose leaf chains to a CA that nobody trusts.
    pub fn untrusted_server_config(names: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let (cert, key) = generate_ca("untrusted throwaway CA");
        server_config_signed_by(&cert, &key, names, alpn)
    }

    /// A rustls client config trusting only this CA (for talking to upstreams
    /// directly in tests).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der())
            .expect("add test CA to root store");
        let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

fn generate_ca(common_name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, key)
}

fn leaf_signed_by(
    ca_cert: &Certificate,
    ca_key: &KeyPair,
    names: &[&str],
) -> (Certificate, KeyPair) {
    assert!(!names.is_empty(), "a leaf needs at least one name");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate leaf key");
    // `CertificateParams::new` turns IP literals into IP SANs and the rest into DNS SANs.
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[0]);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Strict verifiers (e.g. Python 3.13's VERIFY_X509_STRICT) want an AKI on leaves.
    params.use_authority_key_identifier_extension = true;
    let leaf = params
        .signed_by(&key, ca_cert, ca_key)
        .expect("sign leaf with CA");
    (leaf, key)
}

fn server_config_signed_by(
    ca_cert: &Certificate,
    ca_key: &KeyPair,
    names: &[&str],
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let (leaf, key) = leaf_signed_by(ca_cert, ca_key, names);
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("build server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
