//! Node identity: [`EntityKeypair`] (ed25519) and [`NodeId`], its public half.
//!
//! A node proves who it is by signing its Noise static key and the handshake hash with this
//! key during every handshake (see `docs/mesh-protocol.md`). The secret never leaves the
//! process except through [`EntityKeypair::save`], which writes a file readable by its owner
//! only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use thiserror::Error;

/// First line of a saved keypair file.
const FILE_HEADER: &str = "net-mesh ed25519 secret key v1";

/// Why a keypair or node id could not be loaded, saved or parsed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The key file is readable by other users; it is refused rather than trusted.
    #[error("key file {path} is accessible by other users (mode {mode:o}); expected 0600")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file or the text is not in the expected format.
    #[error("malformed key material: {0}")]
    Malformed(&'static str),
    /// The 32 bytes are not a valid ed25519 public key.
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
}

/// A node's identity: its ed25519 public key.
///
/// Its text form ([`fmt::Display`], [`FromStr`]) is the 32 key bytes in unpadded base64url
/// (43 characters), stable across versions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// The id made of these public key bytes (not checked to be a valid point; see
    /// [`NodeId::verifying_key`]).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ed25519 verifying key, or an error when the bytes are not a valid point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, IdentityError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::InvalidPublicKey)
    }

    /// A short prefix of the text form, for logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| IdentityError::Malformed("node id is not unpadded base64url"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdentityError::Malformed("node id is not 32 bytes"))?;
        let id = NodeId(bytes);
        id.verifying_key()?;
        Ok(id)
    }
}

/// A node's ed25519 keypair.
///
/// `Debug` shows the public id only; the secret is never printed.
#[derive(Clone)]
pub struct EntityKeypair {
    signing: SigningKey,
}

impl EntityKeypair {
    /// A new keypair from the operating system's random source.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self::from_secret_bytes(secret))
    }

    /// The keypair whose secret key is these 32 bytes.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// This node's id (its public key).
    pub fn node_id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let signature: Signature = self.signing.sign(message);
        signature.to_bytes()
    }

    /// Writes the keypair to `path`, replacing any file there, readable and writable by the
    /// owner only (mode 0600 on Unix). The file is written beside its final name and renamed
    /// into place, so a crash never leaves a half-written key.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = format!(
            "{FILE_HEADER}\n{}\n",
            URL_SAFE_NO_PAD.encode(self.signing.to_bytes())
        );
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a keypair written by [`EntityKeypair::save`]. On Unix a file that group or
    /// others may access is refused.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut lines = text.lines();
        if lines.next() != Some(FILE_HEADER) {
            return Err(IdentityError::Malformed("key file header"));
        }
        let encoded = lines
            .next()
            .ok_or(IdentityError::Malformed("key file has no key line"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| IdentityError::Malformed("key line is not unpadded base64url"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdentityError::Malformed("secret key is not 32 bytes"))?;
        Ok(Self::from_secret_bytes(secret))
    }

    /// Loads the keypair at `path`, or generates one and saves it there when no file exists.
    pub fn load_or_generate(path: &Path) -> Result<Self, IdentityError> {
        if path.exists() {
            Self::load(path)
        } else {
            let keypair = Self::generate()?;
            keypair.save(path)?;
            Ok(keypair)
        }
    }
}

impl fmt::Debug for EntityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityKeypair")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

impl PartialEq for EntityKeypair {
    fn eq(&self, other: &Self) -> bool {
        self.node_id() == other.node_id()
    }
}

impl Eq for EntityKeypair {}

/// Verifies an ed25519 signature by `id` over `message` (strict verification).
pub(crate) fn verify(id: &NodeId, message: &[u8], signature: &[u8; 64]) -> bool {
    match id.verifying_key() {
        Ok(key) => key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), IdentityError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let keypair = EntityKeypair::generate().unwrap();
        keypair.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = EntityKeypair::load(&path).unwrap();
        assert_eq!(loaded.node_id(), keypair.node_id());
        let again = EntityKeypair::load_or_generate(&path).unwrap();
        assert_eq!(again.node_id(), keypair.node_id());
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        EntityKeypair::generate().unwrap().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            EntityKeypair::load(&path),
            Err(IdentityError::Permissions { .. })
        ));
    }

    #[test]
    fn malformed_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        for text in [
            "",
            "hello\n",
            "net-mesh ed25519 secret key v1\n!!\n",
            "net-mesh ed25519 secret key v1\nAAAA\n",
        ] {
            let _ = std::fs::remove_file(&path);
            write_private(&path, text.as_bytes()).unwrap();
            assert!(
                matches!(EntityKeypair::load(&path), Err(IdentityError::Malformed(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn node_id_text_form_is_stable() {
        let keypair = EntityKeypair::from_secret_bytes([7u8; 32]);
        let id = keypair.node_id();
        let text = id.to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert!("not-an-id".parse::<NodeId>().is_err());
        // The same secret always gives the same id.
        assert_eq!(
            EntityKeypair::from_secret_bytes([7u8; 32])
                .node_id()
                .to_string(),
            text
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let keypair = EntityKeypair::from_secret_bytes([0x42; 32]);
        let debug = format!("{keypair:?}");
        let secret = URL_SAFE_NO_PAD.encode([0x42u8; 32]);
        assert!(!debug.contains(&secret), "{debug}");
        assert!(debug.contains(&keypair.node_id().to_string()));
    }

    #[test]
    fn signatures_verify_only_for_the_signer() {
        let a = EntityKeypair::from_secret_bytes([1; 32]);
        let b = EntityKeypair::from_secret_bytes([2; 32]);
        let sig = a.sign(b"hello");
        assert!(verify(&a.node_id(), b"hello", &sig));
        assert!(!verify(&b.node_id(), b"hello", &sig));
        assert!(!verify(&a.node_id(), b"hellO", &sig));
    }
}
