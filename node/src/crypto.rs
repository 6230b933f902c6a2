//! Encryption of case content at rest. Each subject's content is sealed
//! (AES-256-GCM) under a data key of its own; data keys are stored wrapped by
//! the node's master key, which lives outside the database (a file or an
//! environment variable). Destroying a data key makes every copy of that
//! content unreadable, including copies in backups taken before.

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

const KEY_LEN: usize = 32;

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow!("no randomness"))?;
    Ok(b)
}

fn seal_with(key: &[u8], aad: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow!("bad key"))?);
    let nonce = random::<NONCE_LEN>()?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| anyhow!("sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend(buf);
    Ok(out)
}

fn open_with(key: &[u8], aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        bail!("sealed value too short");
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow!("bad key"))?);
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow!("bad nonce"))?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| anyhow!("the sealed value does not open (wrong key or altered)"))?;
    Ok(plain.to_vec())
}

/// The node's master key. Never stored in the database; never printed.
pub struct MasterKey([u8; KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// From `master_key` (base64 of 32 bytes, e.g. `EXITNET_MASTER_KEY`), else
    /// from `master_key_file`, else from `<data_dir>/identity/master.key`,
    /// created on first start (mode 0600).
    pub fn load(
        inline: Option<&str>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let decode = |s: &str, what: &str| -> anyhow::Result<Self> {
            let b = STANDARD
                .decode(s.trim())
                .with_context(|| format!("{what}: not base64"))?;
            let arr: [u8; KEY_LEN] = b
                .try_into()
                .map_err(|_| anyhow!("{what}: must be 32 bytes"))?;
            Ok(Self(arr))
        };
        if let Some(s) = inline {
            return decode(s, "master_key");
        }
        let path = match file {
            Some(p) => p.to_path_buf(),
            None => {
                let p = data_dir.join("identity").join("master.key");
                if !p.exists() {
                    crate::identity::create_private_dir(&data_dir.join("identity"))?;
                    crate::identity::write_private(
                        &p,
                        STANDARD.encode(random::<KEY_LEN>()?).as_bytes(),
                    )?;
                    tracing::info!("created the master key for case content at rest");
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading master key {}", path.display()))?;
        decode(&text, "master_key_file")
    }

    /// Seals directly under the master key (outbox payloads awaiting delivery).
    pub fn seal_direct(&self, aad: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        seal_with(&self.0, aad.as_bytes(), plaintext)
    }

    pub fn open_direct(&self, aad: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        open_with(&self.0, aad.as_bytes(), sealed)
    }

    /// A new data key, returned wrapped (for storage) under this master key.
    pub fn new_wrapped_data_key(&self, key_id: &str) -> anyhow::Result<Vec<u8>> {
        seal_with(&self.0, key_id.as_bytes(), &random::<KEY_LEN>()?)
    }

    fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> anyhow::Result<Vec<u8>> {
        open_with(&self.0, key_id.as_bytes(), wrapped)
    }

    /// Seals `plaintext` under the data key `wrapped` (id `key_id`), bound to `aad`.
    pub fn seal(
        &self,
        key_id: &str,
        wrapped: &[u8],
        aad: &str,
        plaintext: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        seal_with(&self.unwrap(key_id, wrapped)?, aad.as_bytes(), plaintext)
    }

    pub fn open(
        &self,
        key_id: &str,
        wrapped: &[u8],
        aad: &str,
        sealed: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        open_with(&self.unwrap(key_id, wrapped)?, aad.as_bytes(), sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let m = MasterKey::load(None, None, dir.path()).unwrap();
        let again = MasterKey::load(None, None, dir.path()).unwrap();
        let w = m.new_wrapped_data_key("subject-1").unwrap();
        let sealed = m
            .seal("subject-1", &w, "referral-1", b"needs trauma care")
            .unwrap();
        assert_eq!(
            again.open("subject-1", &w, "referral-1", &sealed).unwrap(),
            b"needs trauma care"
        );
        // Bound to its row and its key: moved elsewhere it does not open.
        assert!(m.open("subject-1", &w, "referral-2", &sealed).is_err());
        assert!(m.open("subject-2", &w, "referral-1", &sealed).is_err());
        let other = MasterKey::load(Some(&STANDARD.encode([7u8; 32])), None, dir.path()).unwrap();
        assert!(other.open("subject-1", &w, "referral-1", &sealed).is_err());
        assert!(!format!("{m:?}").contains('7'));
        assert!(MasterKey::load(Some("short"), None, dir.path()).is_err());
    }
}
