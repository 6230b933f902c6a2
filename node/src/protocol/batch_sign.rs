//! Receipts signed in batches: the receipts answering one `NotifyBatch`
//! share one ECDSA signature over the root of a Merkle tree (RFC 9162
//! section 2.1) of their payloads, and each carries the path that proves it
//! is a leaf. A receipt stays verifiable on its own; issuing and checking
//! them costs one signature per call instead of one per message (see
//! docs/protocol.md).

use crate::error::{Error, Result};
use exitnet_proto::pb;
use ring::digest::{Context, SHA256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// What a signature of one kind covers before the bytes: a batch's root has
/// one context, a payload signed alone another (`identity::context`). The
/// zero byte keeps either from being any protobuf message the same key
/// signs, and receipts and messages each have their own.
#[derive(Debug)]
pub struct Contexts {
    pub batch: &'static [u8],
    pub alone: &'static [u8],
}

pub const RECEIPTS: &Contexts = &Contexts {
    batch: b"\x00exitnet.v1.receipt-batch\x00",
    alone: crate::identity::context::RECEIPT,
};
pub const MESSAGES: &Contexts = &Contexts {
    batch: b"\x00exitnet.v1.message-batch\x00",
    alone: crate::identity::context::MESSAGE,
};

/// Most leaves of a batch, signed or accepted.
pub const MAX_BATCH_LEAVES: usize = 4096;

/// Longest inclusion path a batch of `MAX_BATCH_LEAVES` needs.
const MAX_PATH: usize = 12;

type Hash = [u8; 32];

fn leaf_hash(payload: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0]);
    c.update(payload);
    digest32(c)
}

fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[1]);
    c.update(left);
    c.update(right);
    digest32(c)
}

fn digest32(c: Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// The tree's root and each leaf's inclusion path, leaf up (RFC 9162
/// 2.1.1 and 2.1.3.1): the left subtree holds the largest power of two
/// fewer than all leaves.
fn tree(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    match leaves {
        [] => (digest32(Context::new(&SHA256)), Vec::new()),
        [one] => (*one, vec![Vec::new()]),
        _ => {
            let k = 1 << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
            let (left, mut left_paths) = tree(&leaves[..k]);
            let (right, mut right_paths) = tree(&leaves[k..]);
            for p in &mut left_paths {
                p.push(right);
            }
            for p in &mut right_paths {
                p.push(left);
            }
            left_paths.append(&mut right_paths);
            (node_hash(&left, &right), left_paths)
        }
    }
}

/// The root a receipt's inclusion proof leads to (RFC 9162 2.1.3.2), or
/// why it leads nowhere.
pub fn root_of(payload: &[u8], proof: &pb::BatchProof) -> std::result::Result<Hash, &'static str> {
    let size = proof.size as usize;
    if !(2..=MAX_BATCH_LEAVES).contains(&size) {
        return Err("the batch size is outside 2 to 4096");
    }
    if proof.index >= proof.size {
        return Err("the index is outside the batch");
    }
    if proof.path.len() > MAX_PATH || proof.path.iter().any(|p| p.len() != 32) {
        return Err("the path is malformed");
    }
    let (mut f, mut s) = (proof.index, proof.size - 1);
    let mut r = leaf_hash(payload);
    for p in &proof.path {
        if s == 0 {
            return Err("the path is longer than the batch needs");
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err("the path is shorter than the batch needs");
    }
    Ok(r)
}

/// The bytes a batch signature covers (`context`: `RECEIPTS.batch` or `MESSAGES.batch`).
pub fn signed_bytes(context: &[u8], root: &Hash) -> Vec<u8> {
    [context, root.as_slice()].concat()
}

/// Signs `payloads` with `key`: one alone directly, several as one batch.
/// One signature and proof per payload, in order.
pub fn sign_all(
    key: &crate::identity::NodeKey,
    context: &Contexts,
    payloads: &[&[u8]],
) -> anyhow::Result<Vec<Signed>> {
    if let [one] = payloads {
        return Ok(vec![(key.sign_in(context.alone, one)?, None)]);
    }
    let leaves: Vec<Hash> = payloads.iter().map(|p| leaf_hash(p)).collect();
    let (root, paths) = tree(&leaves);
    let signature = key.sign(&signed_bytes(context.batch, &root))?;
    let size = u32::try_from(payloads.len())?;
    Ok(paths
        .into_iter()
        .zip(0..)
        .map(|(path, index)| {
            (
                signature.clone(),
                Some(pb::BatchProof {
                    index,
                    size,
                    path: path.into_iter().map(|h| h.to_vec()).collect(),
                }),
            )
        })
        .collect())
}

/// Whether one of `keys` signed `payload`: directly, or as a leaf of a
/// batch under `context`. A batch root that verified once is remembered, so
/// the other leaves of the batch cost hashes only.
pub fn verify(
    context: &Contexts,
    keys: &[&[u8]],
    payload: &[u8],
    signature: &[u8],
    batch: Option<&pb::BatchProof>,
    verified: Option<&VerifiedRoots>,
) -> bool {
    verify_with(context, false, keys, payload, signature, batch, verified)
}

/// As `verify`, for a stored signature: one made alone before signatures
/// carried their context (over the payload only) verifies too. Batch roots
/// always had theirs.
pub fn verify_stored(
    context: &Contexts,
    keys: &[&[u8]],
    payload: &[u8],
    signature: &[u8],
    batch: Option<&pb::BatchProof>,
) -> bool {
    verify_with(context, true, keys, payload, signature, batch, None)
}

fn verify_with(
    context: &Contexts,
    legacy: bool,
    keys: &[&[u8]],
    payload: &[u8],
    signature: &[u8],
    batch: Option<&pb::BatchProof>,
    verified: Option<&VerifiedRoots>,
) -> bool {
    let Some(proof) = batch else {
        return keys.iter().any(|k| {
            if legacy {
                crate::identity::verify_stored(context.alone, k, payload, signature)
            } else {
                crate::identity::verify_in(context.alone, k, payload, signature)
            }
        });
    };
    let Ok(root) = root_of(payload, proof) else {
        return false;
    };
    let signed = signed_bytes(context.batch, &root);
    keys.iter().any(|k| {
        let id = verified.map(|_| VerifiedRoots::id(k, &signed, signature));
        if let (Some(v), Some(id)) = (verified, &id)
            && v.contains(id)
        {
            return true;
        }
        let ok = crate::identity::verify_signature(k, &signed, signature);
        if let (true, Some(v), Some(id)) = (ok, verified, id) {
            v.insert(id);
        }
        ok
    })
}

/// Batch roots whose signature verified, by key, root and signature.
#[derive(Default)]
pub struct VerifiedRoots {
    seen: Mutex<HashSet<Hash>>,
}

impl VerifiedRoots {
    /// Enough for the batches in flight; cleared when full.
    const MAX: usize = 1024;

    fn id(key: &[u8], signed: &[u8], signature: &[u8]) -> Hash {
        let mut c = Context::new(&SHA256);
        for part in [key, signed, signature] {
            c.update(&(part.len() as u64).to_be_bytes());
            c.update(part);
        }
        digest32(c)
    }

    fn contains(&self, id: &Hash) -> bool {
        self.seen.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    fn insert(&self, id: Hash) {
        if let Ok(mut s) = self.seen.lock() {
            if s.len() >= Self::MAX {
                s.clear();
            }
            s.insert(id);
        }
    }
}

/// A receipt's signature and, when it was signed with others, its proof.
pub type Signed = (Vec<u8>, Option<pb::BatchProof>);

struct Pending {
    /// The signing key's fingerprint and the peer the receipt goes to:
    /// receipts share a batch only when both are the same.
    group: (String, String),
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Signed>>,
}

/// The receipts of one `NotifyBatch` call, signed together once every
/// message of the call has either its receipt ready or no receipt at all.
struct Round {
    /// Messages of the call that may still bring a receipt.
    expected: usize,
    waiting: Vec<Pending>,
}

/// The node's keys, as a signing round needs them: the payloads signed
/// together (`sign_all` in the receipts' context) with the key
/// `fingerprint`. The node's state provides it (`state.rs`).
pub trait ReceiptKeys: Send + Sync {
    fn sign_receipts(&self, fingerprint: &str, payloads: &[&[u8]]) -> Result<Vec<Signed>>;
}

impl ReceiptKeys for crate::identity::IdentityCell {
    fn sign_receipts(
        &self,
        fingerprint: &str,
        payloads: &[&[u8]],
    ) -> crate::error::Result<Vec<Signed>> {
        let identity = self.read().map_err(crate::error::Error::Internal)?;
        let key = identity.key(fingerprint).ok_or_else(|| {
            crate::error::Error::Internal(anyhow::anyhow!("the signing key is gone"))
        })?;
        sign_all(key, RECEIPTS, payloads).map_err(crate::error::Error::Internal)
    }
}

/// One message's place in a batch's signing round. Signing through it
/// waits for the round; dropping it unused (the message was refused, or its
/// task ended) lets the round go on without it.
pub struct Member {
    keys: Arc<dyn ReceiptKeys>,
    round: Arc<Mutex<Round>>,
    used: bool,
}

impl Member {
    /// Places for `n` messages of one call.
    pub fn round(keys: Arc<dyn ReceiptKeys>, n: usize) -> Vec<Member> {
        let round = Arc::new(Mutex::new(Round {
            expected: n,
            waiting: Vec::with_capacity(n),
        }));
        (0..n)
            .map(|_| Member {
                keys: keys.clone(),
                round: round.clone(),
                used: false,
            })
            .collect()
    }

    /// Signs `payload` (a receipt for `peer`, with our key `fingerprint`)
    /// together with the rest of the round.
    pub async fn sign(mut self, fingerprint: &str, peer: &str, payload: Vec<u8>) -> Result<Signed> {
        let (reply, answer) = oneshot::channel();
        self.used = true;
        let ready = {
            let mut round = self.round.lock().unwrap_or_else(|p| p.into_inner());
            round.waiting.push(Pending {
                group: (fingerprint.to_owned(), peer.to_owned()),
                payload,
                reply,
            });
            round.take_if_complete()
        };
        if let Some(items) = ready {
            sign_groups(self.keys.as_ref(), items);
        }
        answer
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("the receipt was not signed")))?
    }
}

impl Round {
    /// Everything waiting, once nothing else can join.
    fn take_if_complete(&mut self) -> Option<Vec<Pending>> {
        (!self.waiting.is_empty() && self.waiting.len() >= self.expected)
            .then(|| std::mem::take(&mut self.waiting))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.used {
            return;
        }
        let ready = {
            let mut round = self.round.lock().unwrap_or_else(|p| p.into_inner());
            round.expected -= 1;
            round.take_if_complete()
        };
        if let Some(items) = ready {
            sign_groups(self.keys.as_ref(), items);
        }
    }
}

fn sign_groups(keys: &dyn ReceiptKeys, items: Vec<Pending>) {
    let mut groups: Vec<((String, String), Vec<Pending>)> = Vec::new();
    for p in items {
        match groups
            .iter_mut()
            .find(|(g, v)| *g == p.group && v.len() < MAX_BATCH_LEAVES)
        {
            Some((_, v)) => v.push(p),
            None => groups.push((p.group.clone(), vec![p])),
        }
    }
    for ((fingerprint, _), group) in groups {
        let signed = sign_group(keys, &fingerprint, &group);
        for (p, s) in group.into_iter().zip(signed) {
            let _ = p.reply.send(s);
        }
    }
}

/// One result per receipt of the group.
fn sign_group(keys: &dyn ReceiptKeys, fingerprint: &str, group: &[Pending]) -> Vec<Result<Signed>> {
    let payloads: Vec<&[u8]> = group.iter().map(|p| p.payload.as_slice()).collect();
    let signed = keys.sign_receipts(fingerprint, &payloads);
    match signed {
        Ok(all) => all.into_iter().map(Ok).collect(),
        Err(e) => group
            .iter()
            .map(|_| Err(Error::Internal(anyhow::anyhow!("{e}"))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("receipt {i}").into_bytes())
            .collect()
    }

    /// RFC 9162's recursive definition, written out directly.
    fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            1 => leaf_hash(&d[0]),
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn proof(i: usize, n: usize, path: &[Hash]) -> pb::BatchProof {
        pb::BatchProof {
            index: i as u32,
            size: n as u32,
            path: path.iter().map(|h| h.to_vec()).collect(),
        }
    }

    #[test]
    fn every_leaf_proves_the_root_and_nothing_else_does() {
        for n in 2..=70 {
            let d = leaves(n);
            let hashes: Vec<Hash> = d.iter().map(|p| leaf_hash(p)).collect();
            let (root, paths) = tree(&hashes);
            assert_eq!(root, mth(&d), "root of {n}");
            for (i, path) in paths.iter().enumerate() {
                assert_eq!(
                    root_of(&d[i], &proof(i, n, path)),
                    Ok(root),
                    "leaf {i} of {n}"
                );
                // Another payload, another place, a cut or padded path, a
                // flipped sibling: none leads to the root.
                assert_ne!(root_of(b"forged", &proof(i, n, path)), Ok(root));
                let other = (i + 1) % n;
                assert_ne!(root_of(&d[i], &proof(other, n, path)), Ok(root));
                if !path.is_empty() {
                    assert!(root_of(&d[i], &proof(i, n, &path[..path.len() - 1])).is_err());
                    let mut flipped = path.clone();
                    flipped[0][0] ^= 1;
                    assert_ne!(root_of(&d[i], &proof(i, n, &flipped)), Ok(root));
                }
                let mut padded = path.clone();
                padded.push([0; 32]);
                assert!(root_of(&d[i], &proof(i, n, &padded)).is_err());
            }
        }
    }

    #[test]
    fn bounds_are_checked_before_any_hashing() {
        let p = |index, size, path: Vec<Vec<u8>>| pb::BatchProof { index, size, path };
        assert!(root_of(b"x", &p(0, 1, vec![])).is_err());
        assert!(root_of(b"x", &p(0, 4097, vec![vec![0; 32]; 13])).is_err());
        assert!(root_of(b"x", &p(2, 2, vec![vec![0; 32]])).is_err());
        assert!(root_of(b"x", &p(0, 2, vec![vec![0; 31]])).is_err());
        assert!(root_of(b"x", &p(0, 2, vec![vec![0; 32]; 13])).is_err());
    }

    #[test]
    fn a_batch_signature_verifies_once_per_root() {
        let key = crate::identity::NodeKey::generate("a").expect("key");
        let other = crate::identity::NodeKey::generate("b").expect("key");
        let d = leaves(5);
        let payloads: Vec<&[u8]> = d.iter().map(Vec::as_slice).collect();
        let signed = sign_all(&key, RECEIPTS, &payloads).expect("sign");
        assert_eq!(signed.len(), 5);
        let cache = VerifiedRoots::default();
        let ok = |k: &crate::identity::NodeKey, ctx, p: &[u8], s: &Signed, c| {
            verify(ctx, &[k.spki_der()], p, &s.0, s.1.as_ref(), c)
        };
        for (p, s) in payloads.iter().zip(&signed) {
            assert!(s.1.is_some());
            assert!(ok(&key, RECEIPTS, p, s, Some(&cache)));
            assert!(ok(&key, RECEIPTS, p, s, None));
            // Remembered for its key and context only.
            assert!(!ok(&other, RECEIPTS, p, s, Some(&cache)));
            assert!(!ok(&key, MESSAGES, p, s, Some(&cache)));
            assert!(!ok(&key, RECEIPTS, b"forged", s, Some(&cache)));
            // The root's signature is no signature of any one payload.
            assert!(!ok(&key, RECEIPTS, p, &(s.0.clone(), None), None));
        }
        assert_eq!(cache.seen.lock().expect("lock").len(), 1);
        // One payload alone is signed directly.
        let alone = sign_all(&key, MESSAGES, &[b"one"]).expect("sign");
        assert!(alone[0].1.is_none());
        assert!(ok(&key, MESSAGES, b"one", &alone[0], None));
        assert!(!ok(&key, MESSAGES, b"two", &alone[0], None));
        // In its context: not a receipt, and no signature of the bare bytes.
        assert!(!ok(&key, RECEIPTS, b"one", &alone[0], None));
        assert!(!crate::identity::verify_signature(
            key.spki_der(),
            b"one",
            &alone[0].0
        ));
        // A signature of the bare bytes (made before contexts) is accepted
        // only as a stored one.
        let bare = key.sign(b"one").expect("sign");
        assert!(!ok(&key, MESSAGES, b"one", &(bare.clone(), None), None));
        assert!(verify_stored(
            MESSAGES,
            &[key.spki_der()],
            b"one",
            &bare,
            None
        ));
        assert!(verify_stored(
            MESSAGES,
            &[key.spki_der()],
            b"one",
            &alone[0].0,
            None
        ));
    }
}
