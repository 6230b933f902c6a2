//! Our own public keys over time: each key we signed checkpoints or
//! receipts with is remembered (in the database's node metadata), so that
//! what it signed still verifies long after it was rotated away.

use crate::error::Result;
use crate::identity::hex;
use crate::state::NodeState;

fn key_meta(fingerprint: &str) -> String {
    format!("audit_key:{fingerprint}")
}

/// Our public key with this fingerprint, if we ever signed with it.
pub async fn own_key(state: &NodeState, fingerprint: &str) -> Result<Option<Vec<u8>>> {
    if let Some(k) = state.identity()?.key(fingerprint) {
        return Ok(Some(k.spki_der().to_vec()));
    }
    Ok(state
        .store
        .meta_get(&key_meta(fingerprint))
        .await?
        .and_then(|h| crate::domain::unhex(&h)))
}

/// Remembers the public key `spki` under its `fingerprint`.
pub async fn remember(state: &NodeState, fingerprint: &str, spki: &[u8]) -> Result<()> {
    state
        .store
        .meta_set(&key_meta(fingerprint), &hex(spki))
        .await
}

/// Remembers the current key's public half (see `own_key`).
pub async fn remember_own_key(state: &NodeState) -> Result<()> {
    let (fp, spki) = {
        let identity = state.identity()?;
        let k = identity.current();
        (k.fingerprint().to_owned(), k.spki_der().to_vec())
    };
    remember(state, &fp, &spki).await
}
