#![forbid(unsafe_code)]
//! airlock's certificate authority and the leaf certificates it mints per host.
//!
//! The CA signs one ECDSA P-256 leaf per intercepted host. Leaves are cached
//! and minted once even when many connections to a new host arrive together:
//! the cache coalesces concurrent misses onto one mint.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::ring::sign::any_ecdsa_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// File names inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// How far `not_before` is backdated, so clients with a slow clock accept a fresh leaf.
const LEAF_BACKDATE: Duration = Duration::from_secs(24 * 3600);
/// Leaf lifetime: well under the 200-day ceiling browsers and Apple clients enforce.
const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Cached leaves are replaced well before they expire.
const LEAF_CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already exists; pass --force to replace the CA")]
    AlreadyExists(PathBuf),
    #[error("{path}: not a usable CA certificate or key: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot mint a certificate for {host:?}: {reason}")]
    Mint { host: String, reason: String },
}

/// The CA that signs leaf certificates. The key never leaves this type:
/// `Debug` shows only the subject.
pub struct CertificateAuthority {
    cert: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A fresh CA with a P-256 key.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CertError::Mint {
            host: common_name.to_owned(),
            reason: e.to_string(),
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "airlock");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(|e| CertError::Mint {
            host: common_name.to_owned(),
            reason: e.to_string(),
        })?;
        let cert_pem = cert.pem();
        Ok(Self {
            cert,
            key,
            cert_pem,
        })
    }

    /// Loads `ca.pem` and `ca-key.pem` from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, CertError> {
        Self::load(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))
    }

    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CertError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        // The key file's contents never go into an error: only its path.
        let key = KeyPair::from_pem(&key_pem).map_err(|_| CertError::Invalid {
            path: key_path.to_owned(),
            reason: "not a PEM private key".into(),
        })?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| CertError::Invalid {
                path: cert_path.to_owned(),
                reason: e.to_string(),
            })?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(CertError::Invalid {
                path: cert_path.to_owned(),
                reason: "certificate is not a CA (basicConstraints CA:false)".into(),
            });
        }
        // Re-issuing from the parsed params gives rcgen an issuer to sign with;
        // the subject and key are the same, so leaves chain to the file's cert.
        let cert = params.self_signed(&key).map_err(|e| CertError::Invalid {
            path: cert_path.to_owned(),
            reason: format!("key does not fit the certificate: {e}"),
        })?;
        if cert.der().as_ref().is_empty() {
            return Err(CertError::Invalid {
                path: cert_path.to_owned(),
                reason: "empty certificate".into(),
            });
        }
        Ok(Self {
            cert,
            key,
            cert_pem,
        })
    }

    /// Loads the CA from `dir`, creating one there first if the directory has none.
    pub fn load_or_create(dir: &Path) -> Result<Self, CertError> {
        if dir.join(CA_CERT_FILE).exists() || dir.join(CA_KEY_FILE).exists() {
            return Self::load_dir(dir);
        }
        let ca = Self::generate("airlock sandbox CA")?;
        ca.write_dir(dir, false)?;
        tracing::info!(dir = %dir.display(), "created a new airlock CA");
        Ok(ca)
    }

    /// Writes `ca.pem` (0644) and `ca-key.pem` (0600) into `dir`.
    /// Refuses to replace existing files unless `force`.
    pub fn write_dir(&self, dir: &Path, force: bool) -> Result<(), CertError> {
        fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !force {
            for p in [&cert_path, &key_path] {
                if p.exists() {
                    return Err(CertError::AlreadyExists(p.clone()));
                }
            }
        }
        write_private(&key_path, self.key.serialize_pem().as_bytes())?;
        write_file(&cert_path, self.cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// The CA certificate as PEM: what sandboxes must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Mints a leaf for `host` (a DNS name or an IP literal).
    pub fn mint_leaf(&self, host: &str) -> Result<CertifiedKey, CertError> {
        let mint_err = |reason: String| CertError::Mint {
            host: host.to_owned(),
            reason,
        };
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| mint_err(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_owned()
                    .try_into()
                    .map_err(|e: rcgen::Error| mint_err(e.to_string()))?,
            ),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| mint_err(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = any_ecdsa_type(&key_der).map_err(|e| mint_err(e.to_string()))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der()],
            signing_key,
        ))
    }
}

fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    // ring's system RNG; a positive 127-bit serial.
    ring_fill(&mut serial);
    serial[0] &= 0x7f;
    serial
}

fn ring_fill(buf: &mut [u8]) {
    use rustls::crypto::ring::default_provider;
    // The provider's SecureRandom is the same RNG rustls uses for handshakes.
    default_provider()
        .secure_random
        .fill(buf)
        .expect("the system random number generator failed");
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), CertError> {
    write_file(path, contents, 0o600)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path).map_err(io_err)?;
        // The mode above applies only to new files; an existing file is tightened too.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
        file.write_all(contents).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path).map_err(io_err)?;
        file.write_all(contents).map_err(io_err)?;
    }
    Ok(())
}

/// File name of the bundle of system roots plus airlock's CA.
pub const CA_BUNDLE_FILE: &str = "ca-bundle.pem";

/// Writes the system's trusted roots followed by `ca_pem` to `path`: for
/// runtimes whose CA variable replaces, rather than extends, their trust store.
/// Returns how many system roots were included.
pub fn write_bundle(path: &Path, ca_pem: &str) -> Result<usize, CertError> {
    let native = rustls_native_certs::load_native_certs();
    let mut out = String::with_capacity(native.certs.len() * 2048 + ca_pem.len());
    for cert in &native.certs {
        out.push_str(&pem_encode("CERTIFICATE", cert.as_ref()));
    }
    out.push_str(ca_pem);
    write_file(path, out.as_bytes(), 0o644)?;
    Ok(native.certs.len())
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Leaf certificates per host, minted on first use and shared afterwards.
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    cache: moka::future::Cache<String, Arc<CertifiedKey>>,
    minted: AtomicU64,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("entries", &self.cache.entry_count())
            .field("minted", &self.minted())
            .finish()
    }
}

impl LeafCache {
    pub fn new(ca: Arc<CertificateAuthority>, capacity: u64) -> Self {
        Self {
            ca,
            cache: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(LEAF_CACHE_TTL)
                .build(),
            minted: AtomicU64::new(0),
        }
    }

    /// The leaf for `host`, minting it if needed. Concurrent callers for the same
    /// new host wait for one mint instead of each minting their own.
    pub async fn get(&self, host: &str) -> Result<Arc<CertifiedKey>, Arc<CertError>> {
        let host = host.to_ascii_lowercase();
        self.cache
            .try_get_with_by_ref(&host, async {
                let ca = self.ca.clone();
                let name = host.clone();
                // ECDSA signing is CPU work; keep it off the I/O threads.
                let leaf = tokio::task::spawn_blocking(move || ca.mint_leaf(&name))
                    .await
                    .map_err(|e| CertError::Mint {
                        host: host.clone(),
                        reason: e.to_string(),
                    })??;
                self.minted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(host = %host, "leaf certificate minted");
                Ok(Arc::new(leaf))
            })
            .await
    }

    /// How many leaves this cache has minted since start.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).expect("valid DER").1
    }

    #[test]
    fn leaf_has_the_extensions_clients_require() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let leaf = ca.mint_leaf("api.github.test").unwrap();
        let cert = parse(leaf.cert[0].as_ref());
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert!(matches!(
            san.general_names[0],
            GeneralName::DNSName("api.github.test")
        ));
        let mut has_aki = false;
        let mut has_ski = false;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(_) => has_aki = true,
                ParsedExtension::SubjectKeyIdentifier(_) => has_ski = true,
                _ => {}
            }
        }
        assert!(has_aki && has_ski, "AKI and SKI must both be set");
        let validity = cert.validity();
        let now = ASN1Time::now();
        assert!(
            validity.not_before.timestamp() < now.timestamp() - 3600,
            "backdated"
        );
        let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert!(
            lifetime < 200 * 24 * 3600,
            "lifetime {lifetime}s is too long"
        );
        // ECDSA P-256 key.
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        // Chains to the CA.
        let ca_cert = parse(leaf.cert[1].as_ref());
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
    }

    #[test]
    fn ip_literal_gets_an_ip_san() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let leaf = ca.mint_leaf("127.0.0.1").unwrap();
        let cert = parse(leaf.cert[0].as_ref());
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert!(matches!(
            san.general_names[0],
            GeneralName::IPAddress(&[127, 0, 0, 1])
        ));
    }

    #[test]
    fn ca_files_round_trip_and_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("round trip").unwrap();
        ca.write_dir(dir.path(), false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = ca.write_dir(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        ca.write_dir(dir.path(), true).unwrap();

        let loaded = CertificateAuthority::load_dir(dir.path()).unwrap();
        let leaf = loaded.mint_leaf("example.test").unwrap();
        let original = parse(ca.cert.der().as_ref());
        let cert = parse(leaf.cert[0].as_ref());
        assert!(cert.verify_signature(Some(original.public_key())).is_ok());
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn broken_key_file_is_named_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("broken").unwrap();
        ca.write_dir(dir.path(), false).unwrap();
        fs::write(
            dir.path().join(CA_KEY_FILE),
            "-----BEGIN PRIVATE KEY-----\nsecretstuff\n",
        )
        .unwrap();
        let err = CertificateAuthority::load_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca-key.pem"), "{err}");
        assert!(!err.contains("secretstuff"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_mint_once() {
        let ca = Arc::new(CertificateAuthority::generate("coalesce").unwrap());
        let cache = Arc::new(LeafCache::new(ca, 100));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get("new.host.test").await.unwrap() })
            })
            .collect();
        let mut first = None;
        for t in tasks {
            let leaf = t.await.unwrap();
            let der = leaf.cert[0].clone();
            match &first {
                None => first = Some(der),
                Some(f) => assert_eq!(f, &der),
            }
        }
        assert_eq!(cache.minted(), 1);
        cache.get("NEW.host.test").await.unwrap();
        assert_eq!(cache.minted(), 1, "host names are case-insensitive");
    }
}
