//! Signed federation messages and receipts. What is signed is the encoded
//! message exactly as sent (kept in the outbox), never a re-serialisation;
//! the message names its sender, its recipient and its ID, so it cannot be
//! replayed to another node, and a receiver remembers the IDs it has seen.

use super::Protocol;
use crate::error::{Error, FieldError, Result};
use crate::store::{NewNotice, NoticeKind, ReceiptRecord, Route};
use crate::wire::time::to_timestamp;
use exitnet_proto::pb;
use prost::Message;

pub use crate::crypto::SEALED_PREFIX;

impl Protocol {
    /// The `NotifyRequest` an outbox row holds, opened if it was sealed.
    pub fn open_notice(&self, notice_id: &str, payload: &[u8]) -> Result<pb::NotifyRequest> {
        let plain = match payload.strip_prefix(SEALED_PREFIX) {
            Some(sealed) => self.master_key.open_direct(notice_id, sealed)?,
            None => payload.to_vec(),
        };
        pb::NotifyRequest::decode(plain.as_slice()).map_err(|e| Error::Internal(e.into()))
    }

    /// A message for `recipient`, wrapped as an outbox notice. It is signed
    /// when it is sent (`sign_for_sending`), with the key of that connection,
    /// and with the other messages of its batch.
    pub fn notice_for(
        &self,
        recipient: &crate::domain::OrgId,
        message: &crate::domain::message::ReferralMessage,
    ) -> Result<NewNotice> {
        let body = message.to_pb(self.org_id.as_str());
        let route = route_of_body(&body);
        // Random, not time-ordered (a UUIDv7 carries the millisecond it was made
        // in), and the day only as the time sent: two recipients of one client
        // must not be able to match their messages by time. The receiver uses
        // `sent_at` only to refuse messages from the future.
        let message_id = uuid::Uuid::new_v4().to_string();
        let msg = pb::FederationMessage {
            message_id: message_id.clone(),
            sender_org: self.org_id.to_string(),
            recipient_org: recipient.to_string(),
            sent_at: Some(to_timestamp(crate::domain::consent::floor_to_day(
                self.now_ms(),
            ))),
            body: Some(body),
        };
        let req = pb::NotifyRequest {
            notice_id: message_id.clone(),
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload: msg.encode_to_vec(),
                signature: Vec::new(),
                batch: None,
            })),
        };
        // The message carries case content: sealed while it waits in the outbox.
        let mut payload = SEALED_PREFIX.to_vec();
        payload.extend(
            self.master_key
                .seal_direct(&message_id, &req.encode_to_vec())?,
        );
        Ok(NewNotice {
            notice_id: message_id,
            org_id: recipient.clone(),
            payload,
            present_key: None,
            route,
            now_ms: self.now_ms(),
        })
    }

    /// A notice about the peering for `org`, as the outbox keeps it;
    /// `present_key` is the key its call must present (a rotation's old key).
    pub fn peering_notice(
        &self,
        org: &crate::domain::OrgId,
        notice: &crate::domain::PeeringNotice,
        present_key: Option<String>,
    ) -> NewNotice {
        let notice_id = new_notice_id();
        let payload = pb::NotifyRequest {
            notice_id: notice_id.clone(),
            notice: Some(notice.to_pb()),
        }
        .encode_to_vec();
        NewNotice {
            notice_id,
            org_id: org.clone(),
            payload,
            present_key,
            route: Route::peering(),
            now_ms: self.now_ms(),
        }
    }

    /// The peer's answer to one of our notices: for a referral message, its
    /// receipt checked against the peer's pinned `keys` (`None` for any other
    /// notice, which is simply delivered).
    pub fn acknowledgement(
        &self,
        peer: &crate::domain::OrgId,
        keys: &[crate::store::PeerKey],
        req: &pb::NotifyRequest,
        resp: &pb::NotifyResponse,
    ) -> Result<Option<Acknowledgement>> {
        let Some(pb::notify_request::Notice::Message(sent)) = &req.notice else {
            return Ok(None);
        };
        let sent_msg = pb::FederationMessage::decode(sent.payload.as_slice())
            .map_err(|e| Error::Internal(e.into()))?;
        let receipt = resp
            .receipt
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the peer sent no receipt".into()))?;
        let (r, record) = self.verify_receipt(peer, keys, sent, &sent_msg, receipt)?;
        let message = match &sent_msg.body {
            Some(pb::federation_message::Body::Offer(_)) => NoticeKind::Offer,
            Some(pb::federation_message::Body::Status(_)) => NoticeKind::Status,
            _ => NoticeKind::Withdrawal,
        };
        Ok(Some(Acknowledgement {
            referral_id: r.referral_id.clone(),
            message,
            nothing_held: r.purge_outcome() == pb::PurgeOutcome::NothingHeld,
            record,
        }))
    }

    /// Checks a receipt a peer returned for `sent` (the notice we delivered):
    /// signed by one of the peer's pinned keys, for this very message.
    pub fn verify_receipt(
        &self,
        peer: &crate::domain::OrgId,
        keys: &[crate::store::PeerKey],
        sent: &pb::SignedMessage,
        sent_msg: &pb::FederationMessage,
        receipt: &pb::SignedReceipt,
    ) -> Result<(pb::Receipt, ReceiptRecord)> {
        let bad = |rule: &str| Error::Unavailable(format!("the peer's receipt is invalid: {rule}"));
        let r = pb::Receipt::decode(receipt.payload.as_slice()).map_err(|_| bad("malformed"))?;
        let spkis: Vec<&[u8]> = keys.iter().map(|k| k.spki_der.as_slice()).collect();
        if !crate::protocol::batch_sign::verify(
            crate::protocol::batch_sign::RECEIPTS,
            &spkis,
            &receipt.payload,
            &receipt.signature,
            receipt.batch.as_ref(),
            Some(&self.verified_roots),
        ) {
            return Err(bad("signature"));
        }
        if r.message_id != sent_msg.message_id
            || r.message_sha256 != sha256(&sent.payload)
            || r.receiver_org != peer.as_str()
            || r.sender_org != self.org_id.as_str()
        {
            return Err(bad("it is not for this message"));
        }
        // It names the referral the message is about, and is of the kind the
        // message calls for (a purge receipt answers a withdrawal, and only that).
        let (referral_id, kind) = match &sent_msg.body {
            Some(pb::federation_message::Body::Offer(o)) => {
                (&o.referral_id, pb::ReceiptKind::Delivery)
            }
            Some(pb::federation_message::Body::Status(s)) => {
                (&s.referral_id, pb::ReceiptKind::Delivery)
            }
            Some(pb::federation_message::Body::Withdrawal(w)) => {
                (&w.referral_id, pb::ReceiptKind::Purge)
            }
            None => return Err(bad("the message has no body")),
        };
        if r.referral_id != *referral_id {
            return Err(bad("it names another referral"));
        }
        if r.kind != kind as i32 {
            return Err(bad("it is not of the kind the message calls for"));
        }
        let record = ReceiptRecord {
            message_id: r.message_id.clone(),
            issued_by: peer.to_string(),
            counterpart: self.org_id.to_string(),
            referral_id: r.referral_id.clone(),
            kind: pb::ReceiptKind::try_from(r.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("RECEIPT_KIND_UNSPECIFIED")
                .to_owned(),
            payload: receipt.payload.clone(),
            signature: receipt.signature.clone(),
            batch: receipt.batch.as_ref().map(Message::encode_to_vec),
            at_ms: r
                .at
                .as_ref()
                .map(crate::wire::time::from_timestamp)
                .unwrap_or_else(|| self.now_ms()),
        };
        Ok((r, record))
    }

    /// Verifies a signed message from `from`: signed by one of the keys pinned
    /// for that peer (a message queued before a key rotation carries the old
    /// key's signature), over a connection authenticated as that peer.
    pub fn open(
        &self,
        from: &crate::domain::OrgId,
        notice_id: &str,
        sender_keys: &[Vec<u8>],
        signed: &pb::SignedMessage,
    ) -> Result<pb::FederationMessage> {
        let keys: Vec<&[u8]> = sender_keys.iter().map(Vec::as_slice).collect();
        if !signed_by_any(&keys, signed, Some(&self.verified_roots)) {
            return Err(Error::PermissionDenied(
                "message.signature: not signed by the calling peer's key".into(),
            ));
        }
        self.open_signed(from, notice_id, signed)
    }

    /// Checks a message whose signature was verified against a key of `from`.
    pub fn open_signed(
        &self,
        from: &crate::domain::OrgId,
        notice_id: &str,
        signed: &pb::SignedMessage,
    ) -> Result<pb::FederationMessage> {
        let msg = pb::FederationMessage::decode(signed.payload.as_slice())
            .map_err(|_| FieldError::new("message.payload", "not a FederationMessage"))?;
        if msg.message_id != notice_id {
            return Err(FieldError::new("message.message_id", "must equal notice_id").into());
        }
        if msg.sender_org != from.as_str() {
            return Err(Error::PermissionDenied(
                "message.sender_org: not the calling peer".into(),
            ));
        }
        if msg.recipient_org != self.org_id.as_str() {
            return Err(Error::PermissionDenied(
                "message.recipient_org: not this node".into(),
            ));
        }
        let sent = msg
            .sent_at
            .as_ref()
            .map(crate::wire::time::from_timestamp)
            .ok_or_else(|| FieldError::new("message.sent_at", "required"))?;
        // Clocks differ; a message from more than an hour in the future is wrong.
        if sent > self.now_ms() + 3600 * 1000 {
            return Err(FieldError::new("message.sent_at", "is in the future").into());
        }
        Ok(msg)
    }
}

use crate::crypto::sha256;

/// A new notice ID: unique, and carrying nothing about its content.
pub fn new_notice_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// How delivery routes a message: its kind and its referral.
fn route_of_body(body: &pb::federation_message::Body) -> Route {
    use pb::federation_message::Body;
    let (kind, referral_id) = match body {
        Body::Offer(o) => (NoticeKind::Offer, &o.referral_id),
        Body::Status(s) => (NoticeKind::Status, &s.referral_id),
        Body::Withdrawal(w) => (NoticeKind::Withdrawal, &w.referral_id),
    };
    Route {
        kind,
        referral_id: Some(referral_id.clone()),
    }
}

/// Whether a notice is a referral's withdrawal (which goes, and is taken,
/// even while a peering is not active).
pub fn is_withdrawal(req: &pb::NotifyRequest) -> bool {
    route_of(req).kind == NoticeKind::Withdrawal
}

/// The route of a notice queued before routes were kept beside it, read
/// from the notice itself.
pub fn route_of(req: &pb::NotifyRequest) -> Route {
    use pb::notify_request::Notice;
    match &req.notice {
        Some(Notice::Message(m)) => pb::FederationMessage::decode(m.payload.as_slice())
            .ok()
            .and_then(|f| f.body)
            .map(|b| route_of_body(&b))
            // Undecodable: a message still, of no referral known.
            .unwrap_or(Route {
                kind: NoticeKind::Status,
                referral_id: None,
            }),
        Some(Notice::Checkpoint(_)) => Route {
            kind: NoticeKind::Checkpoint,
            referral_id: None,
        },
        _ => Route::peering(),
    }
}

/// Queued notices as sent: each referral message signed by `key`, all of
/// them with one signature (a proof each) when `together` (one
/// `NotifyBatch`), else each alone. Other notices go as they are.
pub fn sign_for_sending<'a>(
    key: &crate::identity::NodeKey,
    queued: impl Iterator<Item = &'a pb::NotifyRequest>,
    together: bool,
) -> anyhow::Result<Vec<pb::NotifyRequest>> {
    let mut out: Vec<pb::NotifyRequest> = queued.cloned().collect();
    let mut messages: Vec<&mut pb::SignedMessage> = out
        .iter_mut()
        .filter_map(|r| match &mut r.notice {
            Some(pb::notify_request::Notice::Message(m)) => Some(m),
            _ => None,
        })
        .collect();
    let signed = if together {
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
        crate::protocol::batch_sign::sign_all(
            key,
            crate::protocol::batch_sign::MESSAGES,
            &payloads,
        )?
    } else {
        messages
            .iter()
            .map(|m| {
                Ok((
                    key.sign_in(crate::identity::context::MESSAGE, &m.payload)?,
                    None,
                ))
            })
            .collect::<anyhow::Result<_>>()?
    };
    for (m, (signature, batch)) in messages.iter_mut().zip(signed) {
        m.signature = signature;
        m.batch = batch;
    }
    Ok(out)
}

/// A peer's receipt for one of our referral messages, checked: what it
/// acknowledges, as the services above read it.
#[derive(Debug, Clone)]
pub struct Acknowledgement {
    pub referral_id: String,
    /// The message acknowledged: an offer, a status or a withdrawal.
    pub message: NoticeKind,
    /// For a withdrawal: whether the peer held anything to purge.
    pub nothing_held: bool,
    /// The receipt as it is kept.
    pub record: ReceiptRecord,
}

/// Whether one of `keys` (SubjectPublicKeyInfo, DER) signed the message,
/// alone or in a batch (a root verified before is in `verified`).
pub fn signed_by_any(
    keys: &[&[u8]],
    signed: &pb::SignedMessage,
    verified: Option<&crate::protocol::batch_sign::VerifiedRoots>,
) -> bool {
    crate::protocol::batch_sign::verify(
        crate::protocol::batch_sign::MESSAGES,
        keys,
        &signed.payload,
        &signed.signature,
        signed.batch.as_ref(),
        verified,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: Option<pb::federation_message::Body>) -> pb::NotifyRequest {
        let payload = pb::FederationMessage {
            body,
            ..Default::default()
        }
        .encode_to_vec();
        pb::NotifyRequest {
            notice_id: "n".into(),
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload,
                ..Default::default()
            })),
        }
    }

    /// A notice queued before routes were kept is routed as the route kept
    /// beside a new one would route it.
    #[test]
    fn a_notice_read_for_its_route_routes_as_one_kept_beside_it() {
        use pb::federation_message::Body;
        let bodies = [
            Body::Offer(pb::ReferralOffer {
                referral_id: "r1".into(),
                ..Default::default()
            }),
            Body::Status(pb::ReferralStatus {
                referral_id: "r2".into(),
                ..Default::default()
            }),
            Body::Withdrawal(pb::ReferralWithdrawal {
                referral_id: "r3".into(),
                ..Default::default()
            }),
        ];
        for body in bodies {
            let kept = route_of_body(&body);
            assert_eq!(route_of(&message(Some(body))), kept);
        }
        assert!(is_withdrawal(&message(Some(Body::Withdrawal(
            Default::default()
        )))));
        let undecodable = pb::NotifyRequest {
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload: vec![0xff; 3],
                ..Default::default()
            })),
            ..Default::default()
        };
        let r = route_of(&undecodable);
        assert!(r.kind.is_message() && r.referral_id.is_none());
        let checkpoint = pb::NotifyRequest {
            notice: Some(pb::notify_request::Notice::Checkpoint(Default::default())),
            ..Default::default()
        };
        assert_eq!(route_of(&checkpoint).kind, NoticeKind::Checkpoint);
        let state = pb::NotifyRequest {
            notice: Some(pb::notify_request::Notice::State(1)),
            ..Default::default()
        };
        assert_eq!(route_of(&state), Route::peering());
    }
}
