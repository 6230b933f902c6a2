//! Our own public keys over time: each key we signed checkpoints or
//! receipts with is remembered (in the database's node metadata), so that
//! what it signed still verifies long after it was rotated away.

use super::Protocol;
use crate::error::Result;
use crate::identity::hex;

fn key_meta(fingerprint: &str) -> String {
    format!("audit_key:{fingerprint}")
}

impl Protocol {
    /// Our public key with this fingerprint, if we ever signed with it.
    pub async fn own_key(&self, fingerprint: &str) -> Result<Option<Vec<u8>>> {
        if let Some(k) = self.identity()?.key(fingerprint) {
            return Ok(Some(k.spki_der().to_vec()));
        }
        Ok(self
            .store
            .meta_get(&key_meta(fingerprint))
            .await?
            .and_then(|h| crate::domain::unhex(&h)))
    }

    /// Remembers the public key `spki` under its `fingerprint`.
    pub async fn remember(&self, fingerprint: &str, spki: &[u8]) -> Result<()> {
        self.store
            .meta_set(&key_meta(fingerprint), &hex(spki))
            .await
    }

    /// Remembers the current key's public half (see `own_key`).
    pub async fn remember_own_key(&self) -> Result<()> {
        let (fp, spki) = {
            let identity = self.identity()?;
            let k = identity.current();
            (k.fingerprint().to_owned(), k.spki_der().to_vec())
        };
        self.remember(&fp, &spki).await
    }
}
