//! Envelope encryption for everything secret the vault stores.
//!
//! Each record gets a fresh 256-bit data key; the value is sealed with it
//! (AES-256-GCM), and the data key is sealed with the key-encryption key (KEK).
//! Both seals bind the record's kind and id as associated data, so a sealed
//! value copied onto another row does not open. KEKs carry an id, so the
//! master key can be rotated: old KEKs stay loadable until every record is
//! re-wrapped (`airlock vault rotate-key`).

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

use crate::error::VaultError;

const KEY_LEN: usize = 32;
const FORMAT_VERSION: u8 = 1;

/// A key-encryption key. Its bytes never leave this type.
pub struct Kek {
    id: String,
    key: SecretBox<[u8; KEY_LEN]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Kek {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| VaultError::Config(format!("a master key must be {KEY_LEN} bytes")))?;
        // The id is a digest prefix: stable for the same key, reveals nothing useful.
        let digest = ring::digest::digest(&ring::digest::SHA256, &key);
        let id = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            id,
            key: SecretBox::new(Box::new(key)),
        })
    }

    /// Parses base64 (standard or URL-safe) or 64 hex characters.
    pub fn from_text(text: &str) -> Result<Self, VaultError> {
        let text = Zeroizing::new(text.trim().to_owned());
        let bytes = Zeroizing::new(
            if text.len() == KEY_LEN * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                (0..KEY_LEN)
                    .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| VaultError::Config("master key is not valid hex".into()))?
            } else {
                BASE64
                    .decode(text.as_bytes())
                    .or_else(|_| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.as_bytes())
                    })
                    .map_err(|_| {
                        VaultError::Config(
                            "master key must be 32 bytes as base64 or 64 hex characters".into(),
                        )
                    })?
            },
        );
        Self::from_bytes(&bytes)
    }

    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(key.as_mut())
            .expect("the system random number generator failed");
        Self::from_bytes(key.as_ref()).expect("32 bytes")
    }

    /// Loads the key file, creating it (mode 0600) with a new key when absent.
    pub fn load_or_create_file(path: &Path) -> Result<Self, VaultError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_text(&text)
                .map_err(|e| VaultError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kek = Self::generate();
                let text = Zeroizing::new(BASE64.encode(kek.key.expose_secret()));
                write_private(path, text.as_bytes()).map_err(|e| {
                    VaultError::Config(format!("cannot create {}: {e}", path.display()))
                })?;
                tracing::info!(path = %path.display(), key_id = %kek.id, "created a new vault master key");
                Ok(kek)
            }
            Err(e) => Err(VaultError::Config(format!("{}: {e}", path.display()))),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.key.expose_secret()).expect("32-byte key"),
        )
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The current KEK plus older ones kept only to open not-yet-rotated records.
#[derive(Debug)]
pub struct Keyring {
    current: Kek,
    previous: Vec<Kek>,
}

/// A sealed value as stored: which KEK wrapped its data key, the wrapped key,
/// and the ciphertext. Encoded as one text column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kek_id: String,
    wrapped_key: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl Sealed {
    /// `v1.<kek id>.<wrapped key b64>.<ciphertext b64>`
    pub fn encode(&self) -> String {
        format!(
            "v{FORMAT_VERSION}.{}.{}.{}",
            self.kek_id,
            BASE64.encode(&self.wrapped_key),
            BASE64.encode(&self.ciphertext)
        )
    }

    pub fn decode(text: &str) -> Result<Self, VaultError> {
        let corrupt = || VaultError::Crypto("sealed value is malformed".into());
        let mut parts = text.split('.');
        if parts.next() != Some("v1") {
            return Err(corrupt());
        }
        let kek_id = parts.next().ok_or_else(corrupt)?.to_owned();
        let wrapped_key = BASE64
            .decode(parts.next().ok_or_else(corrupt)?)
            .map_err(|_| corrupt())?;
        let ciphertext = BASE64
            .decode(parts.next().ok_or_else(corrupt)?)
            .map_err(|_| corrupt())?;
        if parts.next().is_some() {
            return Err(corrupt());
        }
        Ok(Self {
            kek_id,
            wrapped_key,
            ciphertext,
        })
    }
}

fn associated_data(kind: &str, record_id: &str) -> Vec<u8> {
    format!("airlock:v{FORMAT_VERSION}:{kind}:{record_id}").into_bytes()
}

/// `nonce || ciphertext || tag`
fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system random number generator failed");
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut in_out,
    )
    .expect("AES-GCM sealing cannot fail for in-memory data");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    in_out.iter_mut().for_each(|b| *b = 0);
    out
}

fn open_with(
    key: &LessSafeKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.len() < NONCE_LEN {
        return Err(VaultError::Crypto("sealed value is truncated".into()));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| VaultError::Crypto("bad nonce".into()))?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| {
            VaultError::Crypto(
                "sealed value does not open (wrong key, or moved to another record)".into(),
            )
        })?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

impl Keyring {
    pub fn new(current: Kek, previous: Vec<Kek>) -> Self {
        Self { current, previous }
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    fn kek(&self, id: &str) -> Result<&Kek, VaultError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| VaultError::Crypto(format!("no master key with id {id} is loaded")))
    }

    pub fn seal(&self, kind: &str, record_id: &str, plaintext: &SecretString) -> Sealed {
        let aad = associated_data(kind, record_id);
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(data_key.as_mut())
            .expect("the system random number generator failed");
        let dek = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, data_key.as_ref()).expect("32-byte key"),
        );
        let ciphertext = seal_with(&dek, &aad, plaintext.expose_secret().as_bytes());
        let wrapped_key = seal_with(&self.current.aead(), &aad, data_key.as_ref());
        Sealed {
            kek_id: self.current.id.clone(),
            wrapped_key,
            ciphertext,
        }
    }

    pub fn open(
        &self,
        kind: &str,
        record_id: &str,
        sealed: &Sealed,
    ) -> Result<SecretString, VaultError> {
        let aad = associated_data(kind, record_id);
        let kek = self.kek(&sealed.kek_id)?;
        let data_key = open_with(&kek.aead(), &aad, &sealed.wrapped_key)?;
        let dek = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &data_key)
                .map_err(|_| VaultError::Crypto("bad data key".into()))?,
        );
        let plain = open_with(&dek, &aad, &sealed.ciphertext)?;
        let text = String::from_utf8(plain.to_vec())
            .map_err(|_| VaultError::Crypto("sealed value is not UTF-8".into()))?;
        Ok(SecretString::from(text))
    }

    /// Re-wraps the data key under the current KEK; the ciphertext is untouched.
    /// `None` when it already is.
    pub fn rewrap(
        &self,
        kind: &str,
        record_id: &str,
        sealed: &Sealed,
    ) -> Result<Option<Sealed>, VaultError> {
        if sealed.kek_id == self.current.id {
            return Ok(None);
        }
        let aad = associated_data(kind, record_id);
        let data_key = open_with(&self.kek(&sealed.kek_id)?.aead(), &aad, &sealed.wrapped_key)?;
        Ok(Some(Sealed {
            kek_id: self.current.id.clone(),
            wrapped_key: seal_with(&self.current.aead(), &aad, &data_key),
            ciphertext: sealed.ciphertext.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding_to_the_record() {
        let ring = Keyring::new(Kek::generate(), vec![]);
        let secret = SecretString::from("gho_realtoken");
        let sealed = ring.seal("access_token", "conn-1", &secret);
        let encoded = sealed.encode();
        assert!(!encoded.contains("gho_realtoken"));
        let decoded = Sealed::decode(&encoded).unwrap();
        assert_eq!(
            ring.open("access_token", "conn-1", &decoded)
                .unwrap()
                .expose_secret(),
            "gho_realtoken"
        );
        assert!(
            ring.open("access_token", "conn-2", &decoded).is_err(),
            "moved to another record"
        );
        assert!(
            ring.open("refresh_token", "conn-1", &decoded).is_err(),
            "moved to another kind"
        );
    }

    #[test]
    fn a_record_sealed_under_an_unloaded_key_is_refused() {
        let sealed = Keyring::new(Kek::generate(), vec![]).seal("k", "r", &SecretString::from("v"));
        let ring = Keyring::new(Kek::generate(), vec![]);
        let err = ring.open("k", "r", &sealed).unwrap_err().to_string();
        assert!(err.contains(&sealed.kek_id), "{err}");
    }

    #[test]
    fn keyring_with_previous_key_opens_and_rewraps() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let old = Kek::from_text(hex).unwrap();
        let sealed = Keyring::new(old, vec![]).seal("k", "r", &SecretString::from("value"));
        let ring = Keyring::new(Kek::generate(), vec![Kek::from_text(hex).unwrap()]);
        let rewrapped = ring.rewrap("k", "r", &sealed).unwrap().expect("rewrapped");
        assert_eq!(rewrapped.kek_id, ring.current_id());
        assert_eq!(
            ring.open("k", "r", &rewrapped).unwrap().expose_secret(),
            "value"
        );
        assert!(ring.rewrap("k", "r", &rewrapped).unwrap().is_none());
    }

    #[test]
    fn key_text_formats() {
        let b64 = BASE64.encode([7u8; 32]);
        assert_eq!(
            Kek::from_text(&b64).unwrap().id(),
            Kek::from_bytes(&[7u8; 32]).unwrap().id()
        );
        let err = Kek::from_text("c2hvcnQ=").unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
        assert!(!format!("{:?}", Kek::generate()).contains("key: ["));
    }
}
