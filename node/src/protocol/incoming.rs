//! A referral message from a peer as the receiving service gets it: opened,
//! its signature verified against the keys pinned for the calling peer, its
//! body read into a domain `ReferralMessage`; with what answers it (our
//! signed receipt, or the one stored for the same message before).

use super::Protocol;
use super::messages::signed_by_any;
use crate::crypto::sha256;
use crate::domain::OrgId;
use crate::domain::message::ReferralMessage;
use crate::error::{Error, FieldError, Result};
use crate::protocol::batch_sign::Member;
use crate::store::{NoticeKind, ReceiptRecord};
use crate::wire::time::to_timestamp;
use exitnet_proto::pb;
use prost::Message;

/// A message received, signature checked.
#[derive(Debug)]
pub struct Incoming {
    /// What it says; an error names the field a peer got wrong.
    pub message: std::result::Result<ReferralMessage, FieldError>,
    /// What kind of message it is, read even where its body is not valid.
    pub kind: NoticeKind,
    /// What answers it.
    pub answer: Answer,
}

/// What a receipt for a message acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// An offer or a status change, stored.
    Delivery,
    /// A withdrawal: the content purged (`held`), or nothing was held.
    Purge { held: bool },
}

/// The receipt for one message: ours, signed as it is issued (with the
/// others of the peer's call when it came in a batch), or the one issued
/// the first time the same message came.
pub struct Answer {
    message_id: String,
    sender_org: String,
    message_sha256: Vec<u8>,
    batch: Option<Member>,
}

impl Protocol {
    /// Opens a message `from` an authenticated peer that called with
    /// `presented_spki`. With a `batch` place it came in a `NotifyBatch`, and
    /// its receipt is signed with the others of the call.
    pub async fn open_incoming(
        &self,
        from: &OrgId,
        notice_id: &str,
        presented_spki: &[u8],
        signed: &pb::SignedMessage,
        batch: Option<Member>,
    ) -> Result<Incoming> {
        // The key the peer called with is pinned (it was found by it) and is
        // almost always the one that signed: the other pinned keys (a rotation
        // under way) are read only when it is not.
        let msg = if signed_by_any(&[presented_spki], signed, Some(&self.verified_roots)) {
            self.open_signed(from, notice_id, signed)?
        } else {
            let keys: Vec<Vec<u8>> = self
                .store
                .peer_keys(from, self.now_ms())
                .await?
                .into_iter()
                .map(|k| k.spki_der)
                .filter(|k| k.as_slice() != presented_spki)
                .collect();
            self.open(from, notice_id, &keys, signed)?
        };
        let body = msg
            .body
            .ok_or_else(|| FieldError::new("message.body", "required"))?;
        let kind = match &body {
            pb::federation_message::Body::Offer(_) => NoticeKind::Offer,
            pb::federation_message::Body::Status(_) => NoticeKind::Status,
            pb::federation_message::Body::Withdrawal(_) => NoticeKind::Withdrawal,
        };
        Ok(Incoming {
            message: ReferralMessage::from_pb(body),
            kind,
            answer: Answer {
                message_id: msg.message_id,
                sender_org: msg.sender_org,
                message_sha256: sha256(&signed.payload),
                batch,
            },
        })
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("message_id", &self.message_id)
            .field("in_batch", &self.batch.is_some())
            .finish()
    }
}

impl Answer {
    /// The receipt stored for this very message, if it came before. The
    /// same message ID with other content is refused: IDs are never reused.
    pub async fn stored(&self, protocol: &Protocol) -> Result<Option<ReceiptRecord>> {
        let Some(stored) = protocol
            .store
            .issued_receipt(&self.message_id, protocol.org_id.as_str(), &self.sender_org)
            .await?
        else {
            return Ok(None);
        };
        let first = pb::Receipt::decode(stored.payload.as_slice())
            .map_err(|e| Error::Internal(anyhow::anyhow!("a stored receipt: {e}")))?;
        if first.message_sha256 != self.message_sha256 {
            return Err(Error::FailedPrecondition(
                "message.message_id: already used for another message".into(),
            ));
        }
        Ok(Some(stored))
    }

    /// Our signed receipt for the message, about `referral_id`.
    pub async fn issue(
        self,
        protocol: &Protocol,
        receipt: Receipt,
        referral_id: &str,
    ) -> Result<ReceiptRecord> {
        let (kind, purge_outcome) = match receipt {
            Receipt::Delivery => (pb::ReceiptKind::Delivery, None),
            Receipt::Purge { held: true } => {
                (pb::ReceiptKind::Purge, Some(pb::PurgeOutcome::Purged))
            }
            Receipt::Purge { held: false } => {
                (pb::ReceiptKind::Purge, Some(pb::PurgeOutcome::NothingHeld))
            }
        };
        let at = protocol.now_ms();
        let payload_for = |fingerprint: &str| {
            pb::Receipt {
                kind: kind as i32,
                message_id: self.message_id.clone(),
                message_sha256: self.message_sha256.clone(),
                sender_org: self.sender_org.clone(),
                receiver_org: protocol.org_id.to_string(),
                referral_id: referral_id.to_owned(),
                at: Some(to_timestamp(at)),
                key_fingerprint: fingerprint.to_owned(),
                purge_outcome: purge_outcome.map_or(0, |o| o as i32),
            }
            .encode_to_vec()
        };
        let (payload, signature, batch) = if let Some(member) = self.batch {
            let fingerprint = protocol.fingerprint()?;
            let payload = payload_for(&fingerprint);
            let (signature, proof) = member
                .sign(&fingerprint, &self.sender_org, payload.clone())
                .await?;
            (payload, signature, proof.map(|p| p.encode_to_vec()))
        } else {
            let identity = protocol.identity()?;
            let key = identity.current();
            let payload = payload_for(key.fingerprint());
            let signature = key.sign_in(crate::identity::context::RECEIPT, &payload)?;
            (payload, signature, None)
        };
        Ok(ReceiptRecord {
            message_id: self.message_id,
            issued_by: protocol.org_id.to_string(),
            counterpart: self.sender_org,
            referral_id: referral_id.to_owned(),
            kind: kind.as_str_name().to_owned(),
            payload,
            signature,
            batch,
            at_ms: at,
        })
    }
}

/// A stored receipt as the peer is answered with it.
pub fn signed_receipt(receipt: ReceiptRecord) -> Result<pb::SignedReceipt> {
    let batch = match receipt.batch {
        Some(b) => {
            Some(pb::BatchProof::decode(b.as_slice()).map_err(|e| Error::Internal(e.into()))?)
        }
        None => None,
    };
    Ok(pb::SignedReceipt {
        payload: receipt.payload,
        signature: receipt.signature,
        batch,
    })
}
