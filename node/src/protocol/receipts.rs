//! Receipts exported from a node (for a court, an inspector, the client)
//! checked against the issuer's pinned keys: the payload, its batch proof and
//! signature, as the federation signs them.

use super::Protocol;

impl Protocol {
    /// Checks an exported receipt against the issuer's pinned keys (or ours).
    pub async fn verify_exported(
        &self,
        r: &exitnet_proto::pb::ExportedReceipt,
    ) -> crate::error::Result<exitnet_proto::pb::VerifyReceiptResponse> {
        use exitnet_proto::pb;
        use prost::Message;
        let mut out = pb::VerifyReceiptResponse::default();
        let Ok(receipt) = pb::Receipt::decode(r.payload.as_slice()) else {
            out.reason = "the payload is not a receipt".into();
            return Ok(out);
        };
        out.kind = pb::ReceiptKind::try_from(receipt.kind)
            .map(|k| k.as_str_name().to_owned())
            .unwrap_or_default();
        out.message_id = receipt.message_id.clone();
        out.referral_id = receipt.referral_id.clone();
        out.sender_org = receipt.sender_org.clone();
        out.receiver_org = receipt.receiver_org.clone();
        out.at = receipt.at;
        out.key_fingerprint = receipt.key_fingerprint.clone();
        out.purge_outcome = match receipt.purge_outcome() {
            pb::PurgeOutcome::Purged => "purged",
            pb::PurgeOutcome::NothingHeld => "nothing_held",
            pb::PurgeOutcome::Unspecified => "",
        }
        .into();
        if receipt.receiver_org != r.issued_by {
            out.reason = format!(
                "issued_by {} but the receipt names {} as its issuer",
                r.issued_by, receipt.receiver_org
            );
            return Ok(out);
        }
        let at = receipt
            .at
            .as_ref()
            .map(crate::wire::time::from_timestamp)
            .unwrap_or(0);
        let keys: Vec<Vec<u8>> = if r.issued_by == self.org_id.as_str() {
            self.own_key(&receipt.key_fingerprint)
                .await?
                .into_iter()
                .collect()
        } else {
            let Ok(org) = crate::domain::OrgId::parse("issued_by", &r.issued_by) else {
                out.reason = "issued_by is not an organisation ID".into();
                return Ok(out);
            };
            // Keys valid when the receipt was signed (a retired key still counts).
            self.store
                .peer_keys(&org, at.min(self.now_ms()))
                .await?
                .into_iter()
                .filter(|k| k.fingerprint == receipt.key_fingerprint)
                .map(|k| k.spki_der)
                .collect()
        };
        if keys.is_empty() {
            out.reason = format!(
                "no key {} is pinned for {}",
                receipt.key_fingerprint, r.issued_by
            );
            return Ok(out);
        }
        if let Some(proof) = &r.batch
            && let Err(why) = crate::protocol::batch_sign::root_of(&r.payload, proof)
        {
            out.reason = format!("the batch proof does not hold: {why}");
            return Ok(out);
        }
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        // Receipts kept from before signatures carried their context still verify.
        if !crate::protocol::batch_sign::verify_stored(
            crate::protocol::batch_sign::RECEIPTS,
            &keys,
            &r.payload,
            &r.signature,
            r.batch.as_ref(),
        ) {
            out.reason = if r.batch.is_some() {
                "the batch signature does not verify with the issuer's key".into()
            } else {
                "the signature does not verify with the issuer's key".into()
            };
            return Ok(out);
        }
        out.valid = true;
        Ok(out)
    }
}
