//! The node's identity: an ECDSA P-256 key and a self-signed certificate in
//! `<data_dir>/identity/`, readable by the owner only. Peers pin the key by
//! the SHA-256 fingerprint of its SubjectPublicKeyInfo; the certificate is
//! only the container TLS needs. A rotation keeps the old key, with the time
//! until which peers still accept it.

use anyhow::{Context, anyhow, bail};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

use crate::domain::time::now_ms;

/// SHA-256 of a DER SubjectPublicKeyInfo, lowercase hex.
pub fn fingerprint_spki(spki_der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, spki_der).as_ref())
}

pub use crate::domain::hex;

/// The DER SubjectPublicKeyInfo inside a DER certificate.
pub fn spki_from_cert(cert_der: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| anyhow!("not an X.509 certificate"))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// Verifies an ECDSA P-256 SHA-256 (ASN.1) signature by the key in `spki_der`.
pub fn verify_signature(spki_der: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let Ok((_, spki)) =
        <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
            x509_parser::error::X509Error,
        >>::from_der(spki_der)
    else {
        return false;
    };
    let key = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        spki.subject_public_key.data.as_ref(),
    );
    key.verify(message, sig).is_ok()
}

/// What a signature is for, signed before the bytes it covers: a zero byte
/// (a protobuf message never starts with one, so the signed bytes are never
/// a message of their own), the name of what is signed, a zero byte. Each
/// kind has its own, so a signature made for one kind never verifies as
/// another. Batch roots have theirs in `batch_sign`.
pub mod context {
    pub const KEY_ROTATION: &[u8] = b"\x00exitnet.v1.key-rotation\x00";
    /// The new key's proof of possession, over the same rotation.
    pub const KEY_ROTATION_NEW_KEY: &[u8] = b"\x00exitnet.v1.key-rotation.new-key\x00";
    pub const INVITATION: &[u8] = b"\x00exitnet.v1.invitation\x00";
    pub const MESSAGE: &[u8] = b"\x00exitnet.v1.message\x00";
    pub const RECEIPT: &[u8] = b"\x00exitnet.v1.receipt\x00";
    pub const CHECKPOINT: &[u8] = b"\x00exitnet.v1.checkpoint\x00";
    pub const WITNESS: &[u8] = b"\x00exitnet.v1.witness\x00";
}

/// The bytes a signature in `context` covers.
pub fn in_context(context: &[u8], message: &[u8]) -> Vec<u8> {
    [context, message].concat()
}

/// Verifies a signature made with `NodeKey::sign_in` in `context`.
pub fn verify_in(context: &[u8], spki_der: &[u8], message: &[u8], sig: &[u8]) -> bool {
    verify_signature(spki_der, &in_context(context, message), sig)
}

/// Verifies a stored signature: made in `context`, or (made before
/// signatures carried one) over the bytes alone. Only for what was stored
/// before; whatever arrives now must carry its context (`verify_in`).
pub fn verify_stored(context: &[u8], spki_der: &[u8], message: &[u8], sig: &[u8]) -> bool {
    verify_in(context, spki_der, message, sig) || verify_signature(spki_der, message, sig)
}

/// Verifies an ECDSA P-256 SHA-256 signature in the fixed (r‖s) form JWS uses.
pub fn verify_signature_fixed(spki_der: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let Ok((_, spki)) =
        <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
            x509_parser::error::X509Error,
        >>::from_der(spki_der)
    else {
        return false;
    };
    signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        spki.subject_public_key.data.as_ref(),
    )
    .verify(message, sig)
    .is_ok()
}

/// One key of the node with its certificate. The PKCS#8 bytes are zeroed
/// when dropped; ring's key pair (`signer`) and the copies rustls loads keep
/// the scalar in memory of their own, which they do not zero.
pub struct NodeKey {
    pkcs8: Zeroizing<Vec<u8>>,
    cert_der: Vec<u8>,
    spki_der: Vec<u8>,
    fingerprint: String,
    signer: EcdsaKeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("NodeKey")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl NodeKey {
    fn from_parts(pkcs8: Vec<u8>, cert_der: Vec<u8>) -> anyhow::Result<Self> {
        let signer = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| anyhow!("the identity key is not an ECDSA P-256 PKCS#8 key"))?;
        let spki_der = spki_from_cert(&cert_der)?;
        let fingerprint = fingerprint_spki(&spki_der);
        // The certificate must hold this very key.
        let (_, spki) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| anyhow!("not an X.509 certificate"))?;
        if spki
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            != signer.public_key().as_ref()
        {
            bail!("the identity certificate does not match the identity key");
        }
        Ok(Self {
            pkcs8: Zeroizing::new(pkcs8),
            cert_der,
            spki_der,
            fingerprint,
            signer,
        })
    }

    /// A new key and self-signed certificate for `org_id`.
    pub fn generate(org_id: &str) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![format!("{org_id}.exitnet.invalid")])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("exitnet node {org_id}"));
        // Trust rests on the pinned key, not on the certificate's dates; a
        // long validity avoids a silent outage when a certificate expires.
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365 * 30);
        let cert = params.self_signed(&key)?;
        Self::from_parts(key.serialize_der(), cert.der().to_vec())
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A copy, to use outside the identity lock.
    pub fn clone_key(&self) -> anyhow::Result<NodeKey> {
        Self::from_parts(self.pkcs8.to_vec(), self.cert_der.clone())
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }

    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()))
    }

    /// ECDSA P-256 SHA-256 signature, ASN.1 DER.
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .signer
            .sign(&SystemRandom::new(), message)
            .map_err(|_| anyhow!("signing failed"))?
            .as_ref()
            .to_vec())
    }

    /// A signature over `message` in `context` (see `context`).
    pub fn sign_in(&self, context: &[u8], message: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.sign(&in_context(context, message))
    }

    /// ECDSA P-256 SHA-256 signature in the fixed (r‖s) form, as JWS ES256 uses.
    pub fn sign_fixed(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let rng = SystemRandom::new();
        let signer = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.pkcs8,
            &rng,
        )
        .map_err(|_| anyhow!("the identity key is not an ECDSA P-256 PKCS#8 key"))?;
        Ok(signer
            .sign(&rng, message)
            .map_err(|_| anyhow!("signing failed"))?
            .as_ref()
            .to_vec())
    }

    /// The key and certificate as rustls serves them.
    pub fn certified_key(&self) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
        let provider = rustls::crypto::ring::default_provider();
        let key = provider
            .key_provider
            .load_private_key(self.private_key_der())
            .context("loading the identity key into rustls")?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(
            vec![self.cert_der()],
            key,
        )))
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let stem = &self.fingerprint[..16];
        let key_pem = Zeroizing::new(pem_encode("PRIVATE KEY", &self.pkcs8));
        write_private(&dir.join(format!("{stem}.key.pem")), key_pem.as_bytes())?;
        write_private(
            &dir.join(format!("{stem}.crt.pem")),
            pem_encode("CERTIFICATE", &self.cert_der).as_bytes(),
        )?;
        Ok(())
    }

    /// Reads a key by fingerprint from an identity directory.
    pub fn read(dir: &Path, fingerprint: &str) -> anyhow::Result<Self> {
        let stem = fingerprint
            .get(..16)
            .ok_or_else(|| anyhow!("bad fingerprint in identity state"))?;
        let key_path = dir.join(format!("{stem}.key.pem"));
        let cert_path = dir.join(format!("{stem}.crt.pem"));
        let mut key = PrivatePkcs8KeyDer::from_pem_file(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let cert = CertificateDer::from_pem_file(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let k = Self::from_parts(key.secret_pkcs8_der().to_vec(), cert.to_vec());
        // The copy read from the file is zeroed as soon as it is copied.
        zeroize::Zeroize::zeroize(&mut key);
        let k = k?;
        if k.fingerprint != fingerprint {
            bail!(
                "identity key {} does not match its recorded fingerprint",
                key_path.display()
            );
        }
        Ok(k)
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    // Zeroed when dropped: for a private key, this is the key too.
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a file readable by the owner only, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Creates a directory readable by the owner only.
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    current: String,
    current_created_at_ms: i64,
    #[serde(default)]
    retired: Vec<RetiredEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RetiredEntry {
    fingerprint: String,
    created_at_ms: i64,
    valid_until_ms: i64,
}

/// A retired key that peers still accept until `valid_until_ms`.
#[derive(Debug)]
pub struct RetiredKey {
    pub key: NodeKey,
    pub created_at_ms: i64,
    pub valid_until_ms: i64,
}

/// The node's current key and the retired keys still within their overlap.
#[derive(Debug)]
pub struct Identity {
    dir: PathBuf,
    current: NodeKey,
    current_created_at_ms: i64,
    retired: Vec<RetiredKey>,
}

impl Identity {
    /// Loads the identity from `<data_dir>/identity`, creating it on first start.
    pub fn load_or_create(data_dir: &Path, org_id: &str) -> anyhow::Result<Self> {
        let dir = data_dir.join("identity");
        create_private_dir(&dir)?;
        let state_path = dir.join("state.json");
        if !state_path.exists() {
            let key = NodeKey::generate(org_id)?;
            key.write(&dir)?;
            let state = StateFile {
                current: key.fingerprint.clone(),
                current_created_at_ms: now_ms(),
                retired: vec![],
            };
            write_private(&state_path, &serde_json::to_vec_pretty(&state)?)?;
            tracing::info!(fingerprint = %key.fingerprint, "created node identity");
        }
        let state: StateFile = serde_json::from_slice(
            &std::fs::read(&state_path)
                .with_context(|| format!("reading {}", state_path.display()))?,
        )
        .with_context(|| format!("parsing {}", state_path.display()))?;
        let current = NodeKey::read(&dir, &state.current)?;
        let now = now_ms();
        let mut retired = Vec::new();
        for r in state.retired.iter().filter(|r| r.valid_until_ms > now) {
            retired.push(RetiredKey {
                key: NodeKey::read(&dir, &r.fingerprint)?,
                created_at_ms: r.created_at_ms,
                valid_until_ms: r.valid_until_ms,
            });
        }
        Ok(Self {
            dir,
            current,
            current_created_at_ms: state.current_created_at_ms,
            retired,
        })
    }

    pub fn current(&self) -> &NodeKey {
        &self.current
    }

    pub fn current_created_at_ms(&self) -> i64 {
        self.current_created_at_ms
    }

    /// Retired keys still within their overlap at `now_ms`.
    pub fn retired(&self, now_ms: i64) -> impl Iterator<Item = &RetiredKey> {
        self.retired
            .iter()
            .filter(move |r| r.valid_until_ms > now_ms)
    }

    /// The key with this fingerprint, current or retired and still valid.
    pub fn key(&self, fingerprint: &str) -> Option<&NodeKey> {
        if self.current.fingerprint == fingerprint {
            return Some(&self.current);
        }
        let now = now_ms();
        self.retired(now)
            .find(|r| r.key.fingerprint == fingerprint)
            .map(|r| &r.key)
    }

    /// Makes a new current key; the old one stays valid for `overlap_ms`.
    /// Crash-safe: the new key's files are written before the state file is
    /// replaced in one rename, so a crash leaves either the old or the new state.
    pub fn rotate(&mut self, org_id: &str, overlap_ms: i64) -> anyhow::Result<i64> {
        let new = NodeKey::generate(org_id)?;
        new.write(&self.dir)?;
        let now = now_ms();
        let valid_until = now + overlap_ms;
        let mut retired: Vec<RetiredEntry> = self
            .retired(now)
            .map(|r| RetiredEntry {
                fingerprint: r.key.fingerprint.clone(),
                created_at_ms: r.created_at_ms,
                valid_until_ms: r.valid_until_ms,
            })
            .collect();
        retired.insert(
            0,
            RetiredEntry {
                fingerprint: self.current.fingerprint.clone(),
                created_at_ms: self.current_created_at_ms,
                valid_until_ms: valid_until,
            },
        );
        let state = StateFile {
            current: new.fingerprint.clone(),
            current_created_at_ms: now,
            retired: retired.clone(),
        };
        write_private(
            &self.dir.join("state.json"),
            &serde_json::to_vec_pretty(&state)?,
        )?;
        let old = std::mem::replace(&mut self.current, new);
        self.retired.retain(|r| r.valid_until_ms > now);
        self.retired.insert(
            0,
            RetiredKey {
                key: old,
                created_at_ms: self.current_created_at_ms,
                valid_until_ms: valid_until,
            },
        );
        self.current_created_at_ms = now;
        Ok(valid_until)
    }
}

/// The node's identity as the running node holds it: read by whatever signs,
/// replaced in place by a key rotation.
#[derive(Debug)]
pub struct IdentityCell(std::sync::RwLock<Identity>);

impl IdentityCell {
    pub fn new(identity: Identity) -> Self {
        Self(std::sync::RwLock::new(identity))
    }

    pub fn read(&self) -> anyhow::Result<std::sync::RwLockReadGuard<'_, Identity>> {
        self.0
            .read()
            .map_err(|_| anyhow::anyhow!("identity lock poisoned"))
    }

    pub fn write(&self) -> anyhow::Result<std::sync::RwLockWriteGuard<'_, Identity>> {
        self.0
            .write()
            .map_err(|_| anyhow::anyhow!("identity lock poisoned"))
    }

    /// The current key's fingerprint.
    pub fn fingerprint(&self) -> anyhow::Result<String> {
        Ok(self.read()?.current().fingerprint().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_is_created_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), "ngo-a").unwrap();
        let b = Identity::load_or_create(dir.path(), "ngo-a").unwrap();
        assert_eq!(a.current().fingerprint(), b.current().fingerprint());
        assert_eq!(a.current().fingerprint().len(), 64);
        for entry in std::fs::read_dir(dir.path().join("identity")).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "identity files must be private");
        }
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_message() {
        let k1 = NodeKey::generate("ngo-a").unwrap();
        let k2 = NodeKey::generate("ngo-b").unwrap();
        let sig = k1.sign(b"hello").unwrap();
        assert!(verify_signature(k1.spki_der(), b"hello", &sig));
        assert!(!verify_signature(k1.spki_der(), b"hellO", &sig));
        assert!(!verify_signature(k2.spki_der(), b"hello", &sig));
        assert!(!verify_signature(b"garbage", b"hello", &sig));
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_overlap_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut id = Identity::load_or_create(dir.path(), "ngo-a").unwrap();
        let old = id.current().fingerprint().to_owned();
        id.rotate("ngo-a", 60_000).unwrap();
        let new = id.current().fingerprint().to_owned();
        assert_ne!(old, new);
        assert!(id.key(&old).is_some());
        let reloaded = Identity::load_or_create(dir.path(), "ngo-a").unwrap();
        assert_eq!(reloaded.current().fingerprint(), new);
        assert!(reloaded.key(&old).is_some());
        // An overlap that has passed is not loaded again.
        id.rotate("ngo-a", -1).unwrap();
        let reloaded = Identity::load_or_create(dir.path(), "ngo-a").unwrap();
        assert!(reloaded.key(&new).is_none());
    }
}
