//! Storage: a trait per aggregate (meta, keys, peers, outbox, consents,
//! referrals, receipts, audit, security events, leases), `Store` for all of
//! them, and a SQLite and a PostgreSQL implementation, each with its own
//! migrations. The SQL both dialects share is written once, a file per
//! aggregate under `sql/`; what differs (connection set-up, transaction
//! start) stays in the backend module. Records are in `records.rs`.
//!
//! Every method that must change several rows together does so in one
//! transaction; no transaction is ever held across a call to a peer.

mod cache;
mod group_commit;
pub mod intake;
mod postgres;
mod records;
mod sql;
mod sqlite;
pub mod wal;

use crate::config::DatabaseUrl;
use crate::domain::audit::{AuditEntry, AuditFilter, AuditRecord};
use crate::domain::consent::Consent;
use crate::domain::{OrgId, Peer};
use crate::error::Result;
use async_trait::async_trait;
use std::sync::Arc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub use records::*;

/// The node's own settings, its backend's housekeeping and the change feed replicas share.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Which backend, for logs: "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    /// Closes the connections (SQLite checkpoints its log).
    async fn close(&self);
    async fn meta_get(&self, key: &str) -> Result<Option<String>>;

    /// Stores `value` under `key` unless a value is there; returns the value kept.
    async fn meta_init(&self, key: &str, value: &str) -> Result<String>;
    async fn meta_set(&self, key: &str, value: &str) -> Result<()>;

    /// After a purge: make sure no copy of the deleted content lingers in
    /// the database's files (SQLite: truncate the write-ahead log).
    async fn after_purge(&self) -> Result<()>;

    /// SQLite: the WAL checkpoints run after purges, by outcome (`done`,
    /// `busy`, `failed`); empty for PostgreSQL.
    fn wal_checkpoints(&self) -> Vec<(&'static str, u64)>;

    /// Tells the other processes on this database (replicas of this node)
    /// that something changed; PostgreSQL: NOTIFY, SQLite: nothing (one process).
    async fn publish_change(&self, payload: &str) -> Result<()>;

    /// What the other processes published, as it comes; `None` where there
    /// are none (SQLite).
    async fn subscribe_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>>;
}

/// Wrapped data keys (one per subject, crypto-shredded on purge).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The wrapped data key `key_id`, stored as `new_wrapped` if it did not exist.
    async fn data_key(&self, key_id: &str, new_wrapped: &[u8], now_ms: i64) -> Result<Vec<u8>>;

    /// The wrapped data key `key_id`, if it still exists.
    async fn find_data_key(&self, key_id: &str) -> Result<Option<Vec<u8>>>;

    /// Wrapped data keys after `after_key_id` in key order, at most `limit`:
    /// `(key_id, wrapped)`, for rewrapping under a new master-key generation.
    async fn wrapped_data_keys(
        &self,
        after_key_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    /// Replaces a wrapped data key if it is still `old` (a purge meanwhile wins).
    async fn rewrap_data_key(&self, key_id: &str, old: &[u8], new: &[u8]) -> Result<bool>;

    /// Rewrites the data-key table when deleted keys may linger in its files
    /// as dead rows (PostgreSQL: `VACUUM FULL data_keys`); whether it did.
    async fn compact_data_keys(&self) -> Result<bool>;
}

/// Invitations, peers, their pinned keys and the notices they sent us.
#[async_trait]
pub trait PeerStore: Send + Sync {
    async fn create_invitation(&self, inv: &NewInvitation) -> Result<()>;

    /// In one transaction: checks the invitation (known, secret, unexpired,
    /// unused), marks it used and records the joiner as a pending peer.
    async fn accept_join(
        &self,
        invitation_id: &str,
        secret_hash: &[u8],
        peer: &NewPeer,
    ) -> Result<std::result::Result<(), JoinRefusal>>;

    /// Records a peer we joined; replaces an earlier final (revoked or
    /// rejected) record of the same organisation.
    async fn insert_peer(&self, peer: &NewPeer) -> Result<()>;
    async fn get_peer(&self, org: &OrgId) -> Result<Option<Peer>>;
    async fn list_peers(&self) -> Result<Vec<Peer>>;

    /// The peer as a call to or from it needs it: `get_peer` without counting
    /// its pending notices (`pending_notices` is 0). Answered from memory
    /// where the store may keep it (see `cache.rs`).
    async fn peer_for_exchange(&self, org: &OrgId) -> Result<Option<Peer>>;

    /// The peer that owns a key valid at `now_ms` (as `peer_for_exchange`).
    async fn find_peer_by_key(&self, fingerprint: &str, now_ms: i64) -> Result<Option<Peer>>;

    /// Keys of a peer valid at `now_ms`, newest first.
    async fn peer_keys(&self, org: &OrgId, now_ms: i64) -> Result<Vec<PeerKey>>;

    /// Applies `update`; false (and nothing changed) if the expected state did not hold.
    async fn update_peer(&self, org: &OrgId, update: &PeerUpdate) -> Result<bool>;

    /// Like `update_peer`, once per `notice_id` from that peer: a repeated
    /// notice changes nothing and returns false.
    async fn apply_notice_once(
        &self,
        org: &OrgId,
        notice_id: &str,
        update: &PeerUpdate,
    ) -> Result<bool>;
    async fn touch_peer(&self, org: &OrgId, now_ms: i64) -> Result<()>;
}

/// Notices waiting for a peer, until delivered or dropped.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    async fn enqueue_notices(&self, notices: &[NewNotice]) -> Result<()>;

    /// Queues notices and sets a meta value, together.
    async fn enqueue_notices_with_meta(
        &self,
        notices: &[NewNotice],
        key: &str,
        value: &str,
    ) -> Result<()>;

    /// Undelivered notices, oldest first.
    async fn undelivered_notices(&self, limit: i64) -> Result<Vec<Notice>>;

    /// Peers with an undelivered notice due at `now_ms`.
    async fn peers_with_due_notices(&self, now_ms: i64) -> Result<Vec<OrgId>>;

    /// One peer's undelivered notices, oldest first.
    async fn undelivered_notices_for(&self, org: &OrgId, limit: i64) -> Result<Vec<Notice>>;
    async fn notice_delivered(&self, id: i64, now_ms: i64) -> Result<()>;
    async fn notice_failed(&self, id: i64, next_attempt_at_ms: i64, error: &str) -> Result<()>;

    /// Gives up on a notice (the peering ended); kept for the record.
    async fn notice_dropped(&self, id: i64, now_ms: i64, why: &str) -> Result<()>;

    /// Outbox payloads sealed under the master key and still to be sent,
    /// after row `after_id`: `(id, notice_id, payload)`.
    async fn sealed_notices(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>>;

    /// Replaces an outbox payload if it is still `old` and still to be sent.
    async fn reseal_notice(&self, id: i64, old: &[u8], new: &[u8]) -> Result<bool>;
}

/// Consents: recorded, withdrawn, forgotten after retention.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Stores a consent, or returns the one stored earlier under the same
    /// owner and request key (an idempotent retry).
    /// `request_digest` tells a retry (same digest) from a reuse of the key
    /// for another request (an error).
    async fn insert_consent(
        &self,
        consent: &Consent,
        request_key: &str,
        request_digest: &[u8],
        audit: &[AuditEntry],
    ) -> Result<Consent>;
    async fn get_consent(&self, consent_id: &str) -> Result<Option<Consent>>;

    /// Newest first, after `cursor`.
    async fn list_consents(
        &self,
        scope: &ListScope,
        subject_ref: Option<&str>,
        cursor: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<Consent>>;

    /// Sets the withdrawal time once; false if it was already withdrawn.
    async fn withdraw_consent(&self, consent_id: &str, now_ms: i64) -> Result<bool>;

    /// Withdraws a consent and applies the changes to its referrals, together.
    async fn withdraw_consent_with(
        &self,
        consent_id: &str,
        changes: &[(String, ReferralChange)],
        now_ms: i64,
        audit: &[AuditEntry],
    ) -> Result<bool>;

    /// Consents withdrawn, or ended by `now_ms`, that still hold their
    /// client reference; at most `limit`.
    async fn consents_to_forget(&self, now_ms: i64, limit: i64) -> Result<Vec<Consent>>;

    /// Replaces a consent's client reference by `kept` (a digest starting
    /// with `FORGOTTEN_PREFIX`) and its terms (the same without their free
    /// text); false if it was forgotten already.
    async fn forget_consent(
        &self,
        consent_id: &str,
        kept: &str,
        terms: &[u8],
        audit: &[AuditEntry],
    ) -> Result<bool>;
}

/// Referrals and their history, from creation to purge.
#[async_trait]
pub trait ReferralStore: Send + Sync {
    /// Stores a new outbound referral with its first event and its message,
    /// in one transaction; a retry (same owner, key and digest) returns the
    /// stored one.
    async fn create_referral(&self, new: &NewCreate) -> Result<ReferralRecord>;

    /// The referral `owner` created with `request_key`, with the request's
    /// digest: a retry refused by checks that no longer pass gets it.
    async fn referral_by_request(
        &self,
        owner: &str,
        request_key: &str,
    ) -> Result<Option<(ReferralRecord, Vec<u8>)>>;

    /// Stores referrals created at the same time together (multi-row
    /// statements, one transaction), each as `create_referral` would: a
    /// repeated request gets the referral it made. One outcome per item.
    async fn create_referrals(&self, items: &[NewCreate]) -> Result<Vec<Result<ReferralRecord>>>;
    async fn get_referral(&self, referral_id: &str) -> Result<Option<ReferralRecord>>;
    async fn referral_history(&self, referral_id: &str) -> Result<Vec<ReferralEvent>>;
    async fn list_referrals(
        &self,
        scope: &ListScope,
        filter: &ReferralFilter,
        cursor: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<ReferralRecord>>;

    /// Outbound referrals resting on a consent.
    async fn referrals_under_consent(&self, consent_id: &str) -> Result<Vec<ReferralRecord>>;

    /// Applies `change` if the referral's state is one of the expected ones;
    /// false (nothing written) otherwise.
    async fn change_referral(&self, referral_id: &str, change: &ReferralChange) -> Result<bool>;

    /// Inbound referrals this node purges by itself (not purged yet): those
    /// whose terms ended by `now_ms`, and those declined or failed here
    /// before `closed_before_ms`. At most `limit`.
    async fn inbound_to_purge(
        &self,
        now_ms: i64,
        closed_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<ReferralRecord>>;

    /// Referrals not purged whose `expires_at` is not known (stored before
    /// it was kept), at most `limit`.
    async fn referrals_without_expiry(&self, limit: i64) -> Result<Vec<ReferralRecord>>;

    /// Sets `expires_at` of each referral.
    async fn set_expiry(&self, items: &[(String, i64)]) -> Result<()>;

    /// Referrals withdrawn (purge pending, done or given up) that still
    /// hold a summary (a sender's copy kept before purges deleted it), at
    /// most `limit`.
    async fn withdrawn_with_summary(&self, limit: i64) -> Result<Vec<ReferralRecord>>;

    /// History events with no sealed content, after `(referral_id, seq)`,
    /// in that order, at most `limit`: `(referral_id, seq, at, detail)`.
    async fn unsealed_history(
        &self,
        after: Option<&(String, i64)>,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64, crate::domain::referral::EventDetail)>>;

    /// Rewrites events: `(referral_id, seq, detail, content)`.
    async fn rewrite_history(
        &self,
        items: &[(
            String,
            i64,
            crate::domain::referral::EventDetail,
            Option<Vec<u8>>,
        )],
    ) -> Result<()>;

    /// Outbound referrals still holding data at their recipient whose consent
    /// has expired (and was not withdrawn) by `now_ms`.
    async fn referrals_with_expired_consent(&self, now_ms: i64) -> Result<Vec<ReferralRecord>>;

    /// Closed outbound referrals to `peer`, not yet purged, closed before `before_ms`.
    async fn closed_referrals_before(
        &self,
        peer: &OrgId,
        before_ms: i64,
    ) -> Result<Vec<ReferralRecord>>;

    /// Inbound referrals a peer sent under this pseudonym.
    async fn referrals_by_pseudonym(&self, pseudonym: &str) -> Result<Vec<ReferralRecord>>;

    /// How many referrals are held, by direction and state.
    async fn referral_counts(&self) -> Result<Vec<(String, String, i64)>>;

    /// Outbound referrals whose purge at the recipient is pending, per peer:
    /// (peer, how many, the oldest one's last change in ms).
    async fn pending_purges(&self) -> Result<Vec<(String, i64, i64)>>;

    /// Referrals received from `org` not yet accepted, declined or purged
    /// (its quota `limits.peer_max_pending_intake`).
    async fn pending_intake(&self, org: &OrgId) -> Result<i64>;

    /// Gives up the purges pending at `org`: drops the withdrawal notices
    /// `notice_rows` still queued for it, marks its pending referrals'
    /// purge `abandoned`, and records `audit`, in one transaction. How many
    /// referrals and notices.
    async fn abandon_purges(
        &self,
        org: &OrgId,
        notice_rows: &[i64],
        audit: &[AuditEntry],
        now_ms: i64,
    ) -> Result<(u64, u64)>;
}

/// What peers sent us and the signed receipts both ways.
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// A received message: stores the inbound referral (or applies the change)
    /// and our receipt, once. A repeat returns the receipt stored the first time.
    async fn receive_message(
        &self,
        receipt: &ReceiptRecord,
        new_inbound: Option<NewInbound<'_>>,
        change: Option<(&str, &ReferralChange)>,
        audit: &[AuditEntry],
    ) -> Result<ReceiptRecord>;

    /// Offers received at once, stored together, each as `receive_message`
    /// would: once, a repeat answered with the receipt stored the first
    /// time, a referral ID already taken refused. One outcome per offer, in
    /// order; `Err` only if nothing could be stored.
    async fn receive_offers(&self, items: &[NewOffer]) -> Result<Vec<Result<ReceiptRecord>>>;

    /// Receipts peers signed for our notices: each kept with the change it
    /// implies and its notice marked delivered, all in one transaction. A
    /// receipt already held (its notice was delivered twice) is not recorded
    /// again.
    async fn accept_receipts(&self, items: &[AcceptedReceipt], now_ms: i64) -> Result<()>;
    async fn receipts_for(&self, referral_id: &str) -> Result<Vec<ReceiptRecord>>;

    /// Referrals exchanged with `peer` (either way) that are not purged or
    /// being purged here.
    async fn unpurged_referral_ids(&self, peer: &OrgId) -> Result<Vec<String>>;

    /// Those of `ids` exchanged with `peer` that are withdrawn here (purge
    /// pending or done).
    async fn withdrawn_among(&self, peer: &OrgId, ids: &[String]) -> Result<Vec<String>>;

    /// The receipt `issued_by` signed for message `message_id` from
    /// `counterpart`, if it was received before: a repeat is answered with it.
    async fn issued_receipt(
        &self,
        message_id: &str,
        issued_by: &str,
        counterpart: &str,
    ) -> Result<Option<ReceiptRecord>>;
}

/// The hash-chained audit log, its checkpoints and the checkpoints we witness for peers.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// `org`'s checkpoints witnessed: the highest position, and how many
    /// were received since `since_ms` (its quota `limits.peer_checkpoints_per_day`).
    async fn witnessed_stats(&self, org: &OrgId, since_ms: i64) -> Result<(Option<i64>, i64)>;

    /// Appends audit records in a transaction of their own.
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<()>;

    /// The chain's head: the number of records and the last hash.
    async fn audit_head(&self) -> Result<(i64, Vec<u8>)>;

    /// Records with `seq > after_seq` matching `filter`, oldest first.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>>;

    /// Records about any of these objects (as object or as the consent).
    async fn audit_for_objects(&self, ids: &[String]) -> Result<Vec<AuditRecord>>;

    /// Stores a checkpoint we signed and queues it for peers, together.
    async fn insert_checkpoint(&self, cp: &CheckpointRecord, notices: &[NewNotice]) -> Result<()>;
    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>>;
    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>>;
    async fn insert_witness(&self, w: &WitnessRecord) -> Result<()>;
    async fn witnesses(&self) -> Result<Vec<WitnessRecord>>;

    /// Keeps a peer's checkpoint with the witness we signed for it; if one
    /// with the same sequence number is held already, returns that one
    /// instead (the same, or a fork) and keeps nothing.
    async fn witness_checkpoint(
        &self,
        org: &OrgId,
        checkpoint: &HeldCheckpoint,
        now_ms: i64,
    ) -> Result<Option<HeldCheckpoint>>;

    /// A peer's checkpoints we hold, `(payload, signature)`, ascending.
    async fn witnessed_checkpoints(
        &self,
        org: &OrgId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// Refused calls and connections, aggregated per minute.
#[async_trait]
pub trait SecurityEventStore: Send + Sync {
    /// Records `n` refusals like `event`, aggregated per minute with the
    /// others of the same surface, reason, key, peer, address (without its
    /// port) and method; how many that minute's row counts now (1: the first).
    async fn record_security_event(&self, event: &SecurityEvent, n: i64) -> Result<i64>;

    /// Newest first, each with how many refusals its row counts.
    async fn security_events(&self, limit: i64) -> Result<Vec<(SecurityEvent, i64)>>;

    /// Deletes rows older than `before_ms`, then the oldest beyond `keep`.
    async fn prune_security_events(&self, before_ms: i64, keep: i64) -> Result<u64>;
}

/// Leases: which replica runs a singleton task.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes or renews the lease `name` for `holder` until `until_ms`; false
    /// if another holder has it and it has not expired at `now_ms`. Replicas
    /// of one node share work through leases (one delivery task per peer).
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool>;

    /// Gives up every lease `holder` has (a replica stopping gracefully).
    async fn release_leases(&self, holder: &str) -> Result<()>;
}

/// Everything a node keeps, by aggregate; a backend implements each part.
pub trait Store:
    MetaStore
    + KeyStore
    + PeerStore
    + OutboxStore
    + ConsentStore
    + ReferralStore
    + ReceiptStore
    + AuditStore
    + SecurityEventStore
    + LeaseStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: MetaStore
        + KeyStore
        + PeerStore
        + OutboxStore
        + ConsentStore
        + ReferralStore
        + ReceiptStore
        + AuditStore
        + SecurityEventStore
        + LeaseStore
        + Send
        + Sync
        + 'static
{
}

/// Opens the store the URL names and applies its migrations.
pub async fn open(url: &DatabaseUrl) -> anyhow::Result<Arc<dyn Store>> {
    let u = url.expose();
    if u.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(u).await?))
    } else if u.starts_with("postgres:") || u.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::open(u).await?))
    } else {
        anyhow::bail!("database_url: unsupported scheme (use sqlite:// or postgres://)")
    }
}
