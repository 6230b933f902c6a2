//! `audit verify`: recomputes the whole chain, checks every checkpoint we
//! signed and every countersignature we hold, and asks each active peer for
//! the checkpoints it witnessed. The first record that fails is named.

use super::Witness;
use crate::audit::{AuditFilter, GENESIS, record_hash};
use crate::domain::OrgId;
use crate::domain::audit::{Checkpoint, SignedCheckpoint, SignedWitness};
use crate::error::Result;
use crate::identity::{context, verify_stored};
use crate::protocol::checkpoint::read_checkpoint;
use crate::store::CheckpointRecord;
use std::collections::{BTreeMap, BTreeSet};

/// At most this many failures are listed (the first is what matters).
const MAX_FAILURES: usize = 50;
const PAGE: i64 = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// The record (or checkpoint position) that fails; 0 when none.
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct PeerCheck {
    pub org_id: String,
    pub held: u32,
    pub agreeing: u32,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub records: i64,
    pub head_hash: Vec<u8>,
    pub checkpoints: u32,
    pub witnesses: u32,
    pub peers: Vec<PeerCheck>,
    pub failures: Vec<Failure>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    fn fail(&mut self, seq: i64, reason: String) {
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(Failure { seq, reason });
        }
    }
}

/// A checkpoint of ours, as a peer or our own table holds it.
struct Held {
    /// Who holds it: "" for ourselves, else the witness.
    holder: String,
    seq: i64,
    head: Vec<u8>,
}

/// Our public keys by fingerprint, looked up once each during a verification.
type OwnKeys = BTreeMap<String, Option<Vec<u8>>>;

impl Witness {
    /// Decodes one of our own checkpoints and checks our signature on it.
    pub(crate) async fn own_checkpoint(
        &self,
        keys: &mut OwnKeys,
        payload: &[u8],
        signature: &[u8],
    ) -> std::result::Result<Checkpoint, String> {
        let cp = read_checkpoint(payload).ok_or_else(|| "malformed".to_owned())?;
        if !keys.contains_key(&cp.key_fingerprint) {
            let k = self
                .protocol
                .own_key(&cp.key_fingerprint)
                .await
                .map_err(|e| e.to_string())?;
            keys.insert(cp.key_fingerprint.clone(), k);
        }
        let key = keys
            .get(&cp.key_fingerprint)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("signed by an unknown key {}", cp.key_fingerprint))?;
        // Checkpoints made before signatures carried their context still verify.
        if !verify_stored(context::CHECKPOINT, &key, payload, signature) {
            return Err("bad signature".into());
        }
        if cp.org_id != self.org_id.as_str() {
            return Err("names another organisation".into());
        }
        Ok(cp)
    }

    /// The checkpoints one peer witnessed for us.
    pub(crate) async fn ask_peer(
        &self,
        peer: &crate::domain::Peer,
    ) -> anyhow::Result<Vec<SignedCheckpoint>> {
        let mut client =
            crate::protocol::peer_client::PeerClient::connect(&self.protocol, peer).await?;
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let page = client.witnessed_checkpoints(after, 1000).await?;
            let Some(last) = page.last() else { break };
            let last_seq = read_checkpoint(&last.payload)
                .map(|c| c.seq)
                .unwrap_or(u64::MAX);
            if last_seq <= after {
                break;
            }
            after = last_seq;
            let n = page.len();
            out.extend(page);
            if n < 1000 {
                break;
            }
        }
        Ok(out)
    }

    pub async fn verify(&self, local_only: bool) -> Result<Report> {
        let mut v = Verification::default();
        let checkpoints = self.store.checkpoints().await?;
        self.own_checkpoints(&mut v, &checkpoints).await;
        self.held_witnesses(&mut v, &checkpoints).await?;
        // What the peers hold: the part of the check the node itself cannot fake.
        if !local_only {
            self.peers_hold(&mut v).await?;
        }
        let at_seq = self.walk_chain(&mut v).await?;
        compare(&mut v, &at_seq);
        let mut report = v.report;
        // The first failure is the lowest position named.
        report
            .failures
            .sort_by_key(|f| if f.seq == 0 { i64::MAX } else { f.seq });
        Ok(report)
    }

    /// Our own checkpoints: our signature, then (`compare`) the chain at each.
    async fn own_checkpoints(&self, v: &mut Verification, checkpoints: &[CheckpointRecord]) {
        let (report, held, own_keys) = (&mut v.report, &mut v.held, &mut v.own_keys);
        report.checkpoints = checkpoints.len() as u32;
        for c in checkpoints {
            match self
                .own_checkpoint(own_keys, &c.payload, &c.signature)
                .await
            {
                Ok(cp) if cp.seq as i64 == c.seq && cp.head_sha256 == c.head_hash => {
                    held.push(Held {
                        holder: String::new(),
                        seq: c.seq,
                        head: c.head_hash.clone(),
                    })
                }
                Ok(_) => report.fail(
                    c.seq,
                    format!("checkpoint {}: its row differs from what was signed", c.seq),
                ),
                Err(e) => report.fail(c.seq, format!("checkpoint {}: {e}", c.seq)),
            }
        }
    }

    /// Countersignatures we hold: each must verify against the witness's key.
    async fn held_witnesses(
        &self,
        v: &mut Verification,
        checkpoints: &[CheckpointRecord],
    ) -> Result<()> {
        let report = &mut v.report;
        let by_seq: BTreeMap<i64, &CheckpointRecord> =
            checkpoints.iter().map(|c| (c.seq, c)).collect();
        for w in self.store.witnesses().await? {
            let Ok(org) = OrgId::parse("witness_org", &w.witness_org) else {
                report.fail(
                    w.seq,
                    format!("witness of checkpoint {}: bad organisation", w.seq),
                );
                continue;
            };
            let Some(c) = by_seq.get(&w.seq) else {
                report.fail(
                    w.seq,
                    format!(
                        "witness by {org} of checkpoint {}: the checkpoint is gone",
                        w.seq
                    ),
                );
                continue;
            };
            let sent = SignedCheckpoint {
                payload: c.payload.clone(),
                signature: c.signature.clone(),
            };
            let signed = SignedWitness {
                payload: w.payload.clone(),
                signature: w.signature.clone(),
            };
            match self.check_witness(&org, &sent, &signed).await {
                Ok(_) => report.witnesses += 1,
                Err(e) => report.fail(
                    w.seq,
                    format!("witness by {org} of checkpoint {}: {e}", w.seq),
                ),
            }
        }

        Ok(())
    }

    /// What each active peer holds of our checkpoints.
    async fn peers_hold(&self, v: &mut Verification) -> Result<()> {
        let (report, held, own_keys) = (&mut v.report, &mut v.held, &mut v.own_keys);
        for peer in self.store.list_peers().await? {
            if !peer.exchange_allowed() {
                continue;
            }
            let mut check = PeerCheck {
                org_id: peer.org_id.to_string(),
                ..PeerCheck::default()
            };
            match self.ask_peer(&peer).await {
                Ok(list) => {
                    for s in list {
                        match self
                            .own_checkpoint(own_keys, &s.payload, &s.signature)
                            .await
                        {
                            Ok(cp) => {
                                check.held += 1;
                                held.push(Held {
                                    holder: peer.org_id.to_string(),
                                    seq: cp.seq as i64,
                                    head: cp.head_sha256,
                                });
                            }
                            Err(e) => {
                                report.fail(0, format!("a checkpoint held by {}: {e}", peer.org_id))
                            }
                        }
                    }
                }
                Err(e) => check.error = Some(format!("{e:#}")),
            }
            report.peers.push(check);
        }
        Ok(())
    }

    /// Walks the chain once, checking every link and hash; the hash at every
    /// position a checkpoint names.
    async fn walk_chain(&self, v: &mut Verification) -> Result<BTreeMap<i64, Vec<u8>>> {
        let (report, held) = (&mut v.report, &v.held);
        // The head before the walk: records are appended while it runs (on
        // PostgreSQL every statement sees what is committed by then), so the
        // chain must reach this head and match it there; whatever follows must
        // be covered by the head read after the walk.
        let (head_seq, head_hash) = self.store.audit_head().await?;
        let mut at_head: Option<Vec<u8>> = None;
        // Walk the chain once, remembering the hash at every checkpointed position.
        let wanted: BTreeSet<i64> = held.iter().map(|h| h.seq).collect();
        let mut at_seq: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let mut prev = GENESIS.to_vec();
        let mut expected = 1i64;
        let mut after = 0i64;
        loop {
            let page = self
                .store
                .list_audit(&AuditFilter::default(), after, PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                if r.seq != expected {
                    let missing = if r.seq == expected + 1 {
                        format!("record {expected} is missing")
                    } else {
                        format!("records {expected} to {} are missing", r.seq - 1)
                    };
                    report.fail(expected, missing);
                } else if r.prev_hash != prev {
                    report.fail(
                        r.seq,
                        format!(
                            "record {} does not chain to record {} (one of them was changed)",
                            r.seq,
                            r.seq - 1
                        ),
                    );
                }
                if record_hash(r.seq, &r.prev_hash, &r.entry) != r.hash {
                    report.fail(
                        r.seq,
                        format!("record {} was changed after it was written", r.seq),
                    );
                }
                if wanted.contains(&r.seq) {
                    at_seq.insert(r.seq, r.hash.clone());
                }
                if r.seq == head_seq {
                    at_head = Some(r.hash.clone());
                }
                prev = r.hash.clone();
                expected = r.seq + 1;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        let last_seq = expected - 1;
        let (head_after, head_hash_after) = self.store.audit_head().await?;
        report.records = last_seq;
        report.head_hash = prev.clone();
        if last_seq < head_seq {
            report.fail(
            last_seq + 1,
            format!("the chain ends at record {last_seq} but its head says {head_seq}: records were deleted"),
        );
        } else if last_seq > head_after {
            report.fail(
            head_after + 1,
            format!("the chain goes on to record {last_seq} but its head says {head_after}: records were added"),
        );
        } else if head_seq > 0 && at_head.as_ref() != Some(&head_hash) {
            report.fail(
                head_seq,
                format!("the head hash does not match record {head_seq}"),
            );
        } else if last_seq == head_after && prev != head_hash_after {
            report.fail(
                last_seq,
                format!("the head hash does not match record {last_seq}"),
            );
        }

        v.last_seq = last_seq;
        Ok(at_seq)
    }
}

/// What a verification gathers as it goes.
#[derive(Default)]
struct Verification {
    report: Report,
    /// Checkpoints of ours, as we and our peers hold them.
    held: Vec<Held>,
    own_keys: OwnKeys,
    /// The chain's last record.
    last_seq: i64,
}

/// Every checkpoint, ours or witnessed, must match the chain at its position.
fn compare(v: &mut Verification, at_seq: &BTreeMap<i64, Vec<u8>>) {
    let (report, held, last_seq) = (&mut v.report, &mut v.held, v.last_seq);
    held.sort_by_key(|h| h.seq);
    for h in held.iter() {
        let who = if h.holder.is_empty() {
            "our own".to_owned()
        } else {
            format!("witnessed by {}", h.holder)
        };
        match at_seq.get(&h.seq) {
            Some(hash) if *hash == h.head => {
                if let Some(p) = report.peers.iter_mut().find(|p| p.org_id == h.holder) {
                    p.agreeing += 1;
                }
            }
            Some(_) if h.holder.is_empty() => report.fail(
                h.seq,
                format!(
                    "checkpoint at record {} ({who}) does not match the chain: history was rewritten at or before record {}",
                    h.seq, h.seq
                ),
            ),
            // A peer saw a longer or other history: either it was rewritten,
            // or this database was restored from a backup and has gone on
            // since. Purges after the backup were applied again at start.
            Some(_) => report.fail(
                h.seq,
                format!(
                    "checkpoint at record {} ({who}) does not match the chain: history was rewritten at or before record {}, \
                     or this database was restored from a backup taken before it and the records after the backup are lost \
                     (purges since the backup were applied again at start: referral.purge.reapplied)",
                    h.seq, h.seq
                ),
            ),
            None if h.holder.is_empty() => report.fail(
                h.seq,
                format!("checkpoint at record {} ({who}) is beyond the chain's end: records were deleted", h.seq),
            ),
            None => report.fail(
                h.seq,
                format!(
                    "the chain ends at record {last_seq} but {} witnessed a checkpoint at record {}: this database was \
                     restored from a backup taken before record {} (or records were deleted); records {} to {} are lost \
                     (purges since the backup were applied again at start: referral.purge.reapplied)",
                    h.holder,
                    h.seq,
                    h.seq,
                    last_seq + 1,
                    h.seq
                ),
            ),
        }
    }
}
