//! What peers sent us and the signed receipts both ways.
//!
//! `ReceiptStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::rows::row_to_receipt;
use super::shared::*;
use super::{Db, S};
use crate::domain::OrgId;
use crate::error::Result;
use crate::store::sql::RECEIPT_BY_KEY;
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::ReceiptStore for S {
    async fn receive_message(
        &self,
        receipt: &crate::store::ReceiptRecord,
        new_inbound: Option<crate::store::NewInbound<'_>>,
        change: Option<(&str, &crate::store::ReferralChange)>,
        audit: &[crate::domain::audit::AuditEntry],
    ) -> Result<crate::store::ReceiptRecord> {
        let mut tx = self.begin_write().await?;
        // The receipt first: a concurrent redelivery of the same message
        // (to another replica of this node) waits on its key until this
        // transaction ends, then finds the receipt and applies nothing.
        if insert_receipt(&mut tx, receipt).await? == 0 {
            // A redelivery: the same receipt, nothing applied twice.
            return stored_receipt(&mut tx, receipt).await;
        }
        if let Some(new) = new_inbound {
            let r = new.record;
            if insert_referral(&mut tx, r, None, None).await? != 1 {
                // Another message already brought a referral with this ID.
                return Err(crate::error::Error::AlreadyExists(
                    "offer.referral_id: already used".into(),
                ));
            }
            insert_event(&mut tx, &r.referral_id, new.event).await?;
            if let Some(wrapped) = new.wrapped_key {
                let n = sqlx::query("INSERT INTO data_keys (key_id, wrapped, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING")
                    .bind(&r.key_id)
                    .bind(wrapped)
                    .bind(r.created_at_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n != 1 {
                    return Err(crate::error::Error::AlreadyExists(
                        "offer.referral_id: already used".into(),
                    ));
                }
            }
        }
        let mut records = audit.to_vec();
        if let Some((id, c)) = change
            && apply_referral_change(&mut tx, id, c).await?
        {
            records.extend(c.audit.iter().cloned());
        }
        append_audit_tx(&mut tx, &records).await?;
        tx.commit().await?;
        Ok(receipt.clone())
    }

    async fn receive_offers(
        &self,
        items: &[crate::store::NewOffer],
    ) -> Result<Vec<Result<crate::store::ReceiptRecord>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // The receipts first, as in `receive_message`: a repeat (or a
        // concurrent delivery to another replica) finds its receipt.
        let fresh = insert_receipts(&mut tx, items.iter().map(|i| &i.receipt)).await?;
        let mut out: Vec<Option<Result<crate::store::ReceiptRecord>>> =
            items.iter().map(|_| None).collect();
        let mut new = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let r = &item.receipt;
            if fresh.contains(&(
                r.message_id.clone(),
                r.issued_by.clone(),
                r.counterpart.clone(),
            )) {
                new.push(item);
                continue;
            }
            // A redelivery: the same receipt, nothing applied twice.
            out[i] = Some(stored_receipt(&mut tx, r).await);
        }
        if !new.is_empty() {
            let rows: Vec<_> = new.iter().map(|i| (&i.record, None, None)).collect();
            let stored = insert_referrals(&mut tx, &rows).await?;
            let with_key: Vec<_> = new.iter().filter(|i| i.wrapped_key.is_some()).collect();
            let mut keys_stored = 0;
            if !with_key.is_empty() {
                let mut keys = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO data_keys (key_id, wrapped, created_at) ",
                );
                keys.push_values(&with_key, |mut b, i| {
                    b.push_bind(&i.record.key_id)
                        .push_bind(&i.wrapped_key)
                        .push_bind(i.record.created_at_ms);
                });
                keys.push(" ON CONFLICT (key_id) DO NOTHING RETURNING key_id");
                keys_stored = keys.build().fetch_all(&mut *tx).await?.len();
            }
            if stored != new.len() || keys_stored != with_key.len() {
                // A referral ID or data key already taken (a peer's
                // mistake, or a replayed ID): each offer on its own,
                // so that only the offending ones are refused.
                drop(tx);
                let mut each = Vec::with_capacity(items.len());
                for i in items {
                    let inbound = crate::store::NewInbound {
                        record: &i.record,
                        event: &i.event,
                        wrapped_key: i.wrapped_key.as_deref(),
                    };
                    each.push(
                        self.receive_message(&i.receipt, Some(inbound), None, &i.audit)
                            .await,
                    );
                }
                return Ok(each);
            }
            // New referrals: each one's first event.
            let events: Vec<_> = new
                .iter()
                .map(|i| (i.record.referral_id.as_str(), &i.event))
                .collect();
            insert_events(&mut tx, &events).await?;
            let records: Vec<crate::domain::audit::AuditEntry> =
                new.iter().flat_map(|i| i.audit.iter().cloned()).collect();
            append_audit_tx(&mut tx, &records).await?;
        }
        tx.commit().await?;
        Ok(items
            .iter()
            .zip(out)
            .map(|(i, o)| o.unwrap_or_else(|| Ok(i.receipt.clone())))
            .collect())
    }

    async fn accept_receipts(
        &self,
        items: &[crate::store::AcceptedReceipt],
        now_ms: i64,
    ) -> Result<()> {
        // Multi-row statements: a batch of receipts costs a handful
        // of round trips to the database, not a handful per receipt.
        for chunk in items.chunks(256) {
            let mut tx = self.begin_write().await?;
            let fresh = insert_receipts(&mut tx, chunk.iter().map(|i| &i.receipt)).await?;
            let mut records = Vec::new();
            // The usual change (an offer's receipt: requested ->
            // received, with its event) is applied to the whole batch
            // by two statements; any other one by one.
            let ids: std::collections::HashSet<&str> = chunk
                .iter()
                .filter_map(|i| i.change.as_ref().map(|(id, _)| id.as_str()))
                .collect();
            let distinct = ids.len() == chunk.iter().filter(|i| i.change.is_some()).count();
            let shape = chunk
                .iter()
                .find_map(|i| i.change.as_ref().map(|(_, c)| c))
                .filter(|c| is_transition(c));
            let mut together = Vec::new();
            for i in chunk {
                let r = &i.receipt;
                if fresh.contains(&(
                    r.message_id.clone(),
                    r.issued_by.clone(),
                    r.counterpart.clone(),
                )) {
                    records.extend(i.audit.iter().cloned());
                }
                if let Some((id, c)) = &i.change {
                    if distinct && shape.is_some_and(|s| same_transition(s, c)) {
                        together.push((id.as_str(), c));
                    } else if apply_referral_change(&mut tx, id, c).await? {
                        records.extend(c.audit.iter().cloned());
                    }
                }
            }
            let applied = apply_transitions(&mut tx, &together).await?;
            for (id, c) in &together {
                if applied.contains(*id) {
                    records.extend(c.audit.iter().cloned());
                }
            }
            let mut mark = sqlx::QueryBuilder::<Db>::new("UPDATE peer_notices SET delivered_at = ");
            mark.push_bind(now_ms)
                .push(", last_error = NULL, payload = ")
                .push_bind(Vec::<u8>::new())
                .push(" WHERE id IN (");
            let mut rows = mark.separated(", ");
            for i in chunk {
                rows.push_bind(i.notice_row);
            }
            rows.push_unseparated(")");
            mark.build().execute(&mut *tx).await?;
            append_audit_tx(&mut tx, &records).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn unpurged_referral_ids(&self, peer: &OrgId) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT referral_id FROM referrals WHERE peer_org = $1 AND purge_status = 'none'",
        )
        .bind(peer.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("referral_id")?)).collect()
    }

    async fn withdrawn_among(&self, peer: &OrgId, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "SELECT referral_id FROM referrals WHERE purge_status <> 'none' AND peer_org = ",
        );
        q.push_bind(peer.as_str()).push(" AND referral_id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        list.push_unseparated(")");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("referral_id")?)).collect()
    }

    async fn issued_receipt(
        &self,
        message_id: &str,
        issued_by: &str,
        counterpart: &str,
    ) -> Result<Option<crate::store::ReceiptRecord>> {
        let row = sqlx::query(RECEIPT_BY_KEY)
            .bind(message_id)
            .bind(issued_by)
            .bind(counterpart)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_receipt).transpose()
    }

    async fn receipts_for(&self, referral_id: &str) -> Result<Vec<crate::store::ReceiptRecord>> {
        let rows = sqlx::query(
            "SELECT message_id, issued_by, counterpart, referral_id, kind, payload, signature, batch, at
             FROM receipts WHERE referral_id = $1 ORDER BY at",
        )
        .bind(referral_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_receipt).collect()
    }
}
