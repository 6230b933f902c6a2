//! Checkpoints: the node signs its chain's head (count and last hash) and
//! sends it to every active peer, which keeps it and returns a
//! countersignature. A node that later rewrites its history cannot make the
//! checkpoints its peers hold agree with the new chain.

use super::Witness;
use crate::domain::OrgId;
use crate::domain::audit::{Checkpoint, SignedCheckpoint, SignedWitness};
use crate::error::{Error, Result};
use crate::protocol::checkpoint::{open_checkpoint, read_checkpoint, read_witnessing};
use crate::store::{CheckpointRecord, NewNotice, SecurityEvent, WitnessRecord};

/// What `create` did.
#[derive(Debug, Clone)]
pub struct Created {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    /// Peers it was queued for (0 when the head was already checkpointed).
    pub sent_to: u32,
}

impl Witness {
    /// Signs a checkpoint of the current head (unless one exists for it) and
    /// queues it for every active peer, in one transaction.
    pub async fn create(&self) -> Result<Created> {
        let (seq, head_hash) = self.store.audit_head().await?;
        if let Some(last) = self.store.latest_checkpoint().await?
            && last.seq >= seq
        {
            return Ok(Created {
                seq: last.seq,
                head_hash: last.head_hash,
                sent_to: 0,
            });
        }
        let at = self.now_ms();
        let own = self.protocol.sign_checkpoint(seq, &head_hash, at)?;
        self.protocol.remember(&own.fingerprint, &own.spki).await?;
        let notices: Vec<NewNotice> = self
            .store
            .list_peers()
            .await?
            .into_iter()
            .filter(|p| p.exchange_allowed())
            .map(|p| self.protocol.checkpoint_notice(p.org_id, &own.signed, at))
            .collect();
        let sent_to = notices.len() as u32;
        self.store
            .insert_checkpoint(
                &CheckpointRecord {
                    seq,
                    head_hash: head_hash.clone(),
                    at_ms: at,
                    payload: own.signed.payload,
                    signature: own.signed.signature,
                },
                &notices,
            )
            .await?;
        self.outbox.wake();
        tracing::info!(seq, peers = sent_to, "audit checkpoint signed");
        Ok(Created {
            seq,
            head_hash,
            sent_to,
        })
    }

    /// Whether the schedule calls for a checkpoint now.
    pub async fn due(&self) -> Result<bool> {
        let (seq, _) = self.store.audit_head().await?;
        if seq == 0 {
            return Ok(false);
        }
        let cfg = &self.config.audit;
        Ok(match self.store.latest_checkpoint().await? {
            None => true,
            Some(last) if last.seq >= seq => false,
            Some(last) => {
                (seq - last.seq) as u64 >= cfg.checkpoint_every_records
                    || self.now_ms() - last.at_ms
                        >= (cfg.checkpoint_interval_secs as i64).saturating_mul(1000)
            }
        })
    }

    /// A peer's checkpoint arrived: keep it and countersign it. A second,
    /// different checkpoint for the same position is a fork: refused, recorded.
    pub async fn witness(&self, peer: &OrgId, signed: &SignedCheckpoint) -> Result<SignedWitness> {
        let now = self.now_ms();
        let keys: Vec<Vec<u8>> = self
            .store
            .peer_keys(peer, now)
            .await?
            .into_iter()
            .map(|k| k.spki_der)
            .collect();
        let cp = open_checkpoint(peer, &keys, signed)?;
        let seq = cp.seq as i64;
        // What a peer can make us store is bounded: only a checkpoint above the
        // last one witnessed is kept (the last one again is a repeat, answered
        // below), and at most `limits.peer_checkpoints_per_day` a day.
        let (last, in_a_day) = self.store.witnessed_stats(peer, now - 86_400_000).await?;
        match last {
            Some(last) if seq < last => {
                // Not kept, but compared: a different head for a position we
                // hold is a fork whether or not later checkpoints came since.
                let held = self.store.witnessed_checkpoints(peer, seq - 1, 1).await?;
                let forked = held.first().is_some_and(|(payload, _)| {
                    read_checkpoint(payload)
                        .is_some_and(|h| h.seq == cp.seq && h.head_sha256 != cp.head_sha256)
                });
                if forked {
                    return Err(self.fork(peer, &cp, now).await);
                }
                return Err(Error::FailedPrecondition(format!(
                    "checkpoint.seq: {seq} is below the last checkpoint witnessed for this peer ({last}); only a later one is kept"
                )));
            }
            Some(last) if seq == last => {}
            _ => self.quotas.checkpoints(peer, in_a_day).await?,
        }
        // Signed before it is stored, in a scope of its own: the identity's
        // lock is not held across the write.
        let witness = self.protocol.sign_witness(peer, signed, cp.seq, now)?;
        let held = self
            .store
            .witness_checkpoint(
                peer,
                &crate::store::HeldCheckpoint {
                    seq,
                    head_hash: cp.head_sha256.clone(),
                    payload: signed.payload.clone(),
                    signature: signed.signature.clone(),
                    witness: Some((witness.payload.clone(), witness.signature.clone())),
                },
                now,
            )
            .await?;
        match held {
            None => {}
            // The same checkpoint again (our witness was lost on the way): the
            // witness given the first time, and nothing recorded twice.
            Some(held) if held.head_hash == cp.head_sha256 => {
                return Ok(match held.witness {
                    Some((payload, signature)) if held.payload == signed.payload => {
                        SignedWitness { payload, signature }
                    }
                    // Witnessed before witnesses were kept, or the same head
                    // signed anew: the head is what a witness vouches for.
                    _ => witness,
                });
            }
            Some(_) => return Err(self.fork(peer, &cp, now).await),
        }
        self.audit
            .record(&[crate::audit::AuditEntry::peer(
                self.now_ms(),
                peer.as_str(),
                "checkpoint.witness",
                "checkpoint",
                &seq.to_string(),
            )])
            .await;
        Ok(witness)
    }

    /// A second, different checkpoint for a position witnessed before: recorded
    /// as a security event, and the refusal to answer.
    pub(crate) async fn fork(&self, peer: &OrgId, cp: &Checkpoint, now: i64) -> Error {
        self.refusals
            .record(SecurityEvent {
                at_ms: now,
                surface: "federation".into(),
                reason: "audit_checkpoint_fork".into(),
                key_fingerprint: Some(cp.key_fingerprint.clone()),
                org_id: Some(peer.to_string()),
                remote_addr: None,
                method: Some("Notify".into()),
            })
            .await;
        Error::FailedPrecondition(format!(
            "checkpoint.head_sha256: differs from the checkpoint witnessed earlier for record {}",
            cp.seq
        ))
    }

    /// Checks a peer's countersignature of `sent` and keeps it.
    pub async fn on_witnessed(
        &self,
        peer: &OrgId,
        sent: &SignedCheckpoint,
        witness: Option<&SignedWitness>,
    ) -> Result<()> {
        let bad = |rule: &str| Error::Unavailable(format!("the peer's witness is invalid: {rule}"));
        let w = witness.ok_or_else(|| bad("missing"))?;
        let record = self.check_witness(peer, sent, w).await?;
        self.store.insert_witness(&record).await
    }

    /// Verifies a witness against the peer's keys valid at the time it names.
    pub async fn check_witness(
        &self,
        peer: &OrgId,
        sent: &SignedCheckpoint,
        w: &SignedWitness,
    ) -> Result<WitnessRecord> {
        let at = read_witnessing(w)?.at_ms.unwrap_or_default();
        let keys = self.store.peer_keys(peer, at.min(self.now_ms())).await?;
        let wp = self.protocol.check_witness(peer, sent, w, &keys)?;
        Ok(WitnessRecord {
            seq: wp.seq as i64,
            witness_org: peer.to_string(),
            payload: w.payload.clone(),
            signature: w.signature.clone(),
            at_ms: at,
        })
    }
}

/// Signs checkpoints on schedule until stopped.
pub async fn run(witness: Witness, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        match witness.due().await {
            Ok(true) => {
                if let Err(e) = witness.create().await {
                    tracing::warn!(error = %e, "signing an audit checkpoint failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "checking the audit head failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}
