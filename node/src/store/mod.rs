//! Storage: one trait, a SQLite and a PostgreSQL implementation, each with its
//! own migrations. The SQL both dialects share lives once, in `sql.rs`; what
//! differs (connection set-up, transaction start) stays in the backend module.
//!
//! Every method that must change several rows together does so in one
//! transaction; no transaction is ever held across a call to a peer.

mod cache;
mod group_commit;
pub mod intake;
mod postgres;
mod sql;
mod sqlite;
pub mod wal;

use crate::config::DatabaseUrl;
use crate::domain::audit::{AuditEntry, AuditFilter, AuditRecord};
use crate::domain::consent::Consent;
use crate::domain::{Awaiting, OrgId, OrgProfile, Peer, PeerState};
use crate::error::Result;
use async_trait::async_trait;
use std::sync::Arc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// An invitation as the inviter keeps it: the secret only as a hash.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub expires_at_ms: i64,
    pub note: String,
    pub created_at_ms: i64,
}

/// A key pinned for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKey {
    pub fingerprint: String,
    pub spki_der: Vec<u8>,
    pub added_at_ms: i64,
    /// Unset while the key is the peer's current one.
    pub valid_until_ms: Option<i64>,
}

/// A peer to record, with its first pinned key.
#[derive(Debug, Clone)]
pub struct NewPeer {
    pub profile: OrgProfile,
    pub state: PeerState,
    pub awaiting: Awaiting,
    pub remote_state: Option<PeerState>,
    pub endpoint: String,
    pub key: PeerKey,
    pub now_ms: i64,
}

/// Why a join was refused. Each is recorded as a security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    UnknownInvitation,
    WrongSecret,
    Expired,
    AlreadyUsed,
    OrgAlreadyPeered,
    KeyAlreadyPinned,
}

impl JoinRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            JoinRefusal::UnknownInvitation => "invitation_unknown",
            JoinRefusal::WrongSecret => "invitation_secret_wrong",
            JoinRefusal::Expired => "invitation_expired",
            JoinRefusal::AlreadyUsed => "invitation_used",
            JoinRefusal::OrgAlreadyPeered => "org_already_peered",
            JoinRefusal::KeyAlreadyPinned => "key_already_pinned",
        }
    }
}

/// A notice queued for a peer (outbox row).
#[derive(Debug, Clone)]
pub struct NewNotice {
    pub notice_id: String,
    pub org_id: OrgId,
    /// Encoded `NotifyRequest`, exactly as it will be sent.
    pub payload: Vec<u8>,
    /// Fingerprint of our own key to present (a key rotation is announced
    /// with the old key); unset means the current key.
    pub present_key: Option<String>,
    pub now_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub id: i64,
    pub notice_id: String,
    pub org_id: OrgId,
    pub payload: Vec<u8>,
    pub present_key: Option<String>,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
}

/// Changes to a peer that arrive together and must apply together.
#[derive(Debug, Clone, Default)]
pub struct PeerUpdate {
    /// Apply only if the local state is still this one.
    pub expected_state: Option<PeerState>,
    pub state: Option<PeerState>,
    pub awaiting: Option<Awaiting>,
    pub remote_state: Option<PeerState>,
    pub profile: Option<OrgProfile>,
    pub add_key: Option<PeerKey>,
    /// Retire every other current key of the peer at this time.
    pub retire_other_keys_at_ms: Option<i64>,
    /// Apply only if the peer's newest pinned key is still this one (a key
    /// rotation: two signed by the same key cannot both apply).
    pub expected_newest_key: Option<String>,
    /// Notices to queue in the same transaction.
    pub notices: Vec<NewNotice>,
    /// Audit records written with the change.
    pub audit: Vec<AuditEntry>,
    pub now_ms: i64,
}

/// Which consents (and later referrals) a caller may list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    All,
    /// Those owned by this subject, or by anyone in this team.
    Owner {
        subject: String,
        team: Option<String>,
    },
}

/// A page position: (recorded_at, id) of the last item seen.
pub type Cursor = (i64, String);

/// A referral as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralRecord {
    pub referral_id: String,
    pub outbound: bool,
    pub peer_org: OrgId,
    /// Outbound: the case manager who sent it. Inbound: the one who took it
    /// on, or empty while it waits in the intake queue.
    pub owner: String,
    pub team: Option<String>,
    pub consent_id: Option<String>,
    /// Inbound: the sender's pseudonym for the client. Outbound: the one sent.
    pub pseudonym: String,
    /// Code names, comma-separated.
    pub need_areas: String,
    pub services: String,
    pub urgency: String,
    /// The data key that seals `summary`.
    pub key_id: String,
    /// Encoded `CaseSummary`, sealed under `key_id`; `None` once purged.
    pub summary: Option<Vec<u8>>,
    /// Encoded `ConsentTerms` as they travelled.
    pub terms: Vec<u8>,
    pub state: String,
    /// `none`, `pending` or `done`.
    pub purge_status: String,
    pub purged_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When the terms it travelled under end (their `valid_until`): an
    /// inbound referral is purged here then, whatever the sender does.
    pub expires_at_ms: Option<i64>,
}

impl ReferralRecord {
    /// The stored state as a code: one this build does not know is an
    /// error (a database written by a newer release, or tampered with),
    /// never silently taken for another.
    pub fn current_state(&self) -> Result<crate::domain::ReferralState> {
        crate::domain::ReferralState::parse(&self.state).ok_or_else(|| {
            crate::error::Error::Internal(anyhow::anyhow!(
                "referral {}: stored state {:?} is not a known state",
                self.referral_id,
                self.state
            ))
        })
    }
}

/// One state change in a referral's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralEvent {
    pub state: String,
    pub at_ms: i64,
    pub by_org: String,
    /// Who at this node made the change (empty for a peer's change).
    pub actor: String,
    /// Encoded `StateChange` with its codes only (state, reasons): what
    /// the history keeps after a purge.
    pub detail: Vec<u8>,
    /// The change's case content (its text, its outcome: an encoded
    /// `StateChange` with those fields only), sealed under the referral's
    /// data key (`referrals::content`); deleted by a purge.
    pub content: Option<Vec<u8>>,
}

/// A signed receipt, ours or a peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub message_id: String,
    pub issued_by: String,
    /// The sender of the acknowledged message.
    pub counterpart: String,
    pub referral_id: String,
    pub kind: String,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// An encoded `BatchProof`, when the signature covers a batch.
    pub batch: Option<Vec<u8>>,
    pub at_ms: i64,
}

/// A peer's audit checkpoint as we hold it, with the witness we signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCheckpoint {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// `(payload, signature)` of our witness; none for one witnessed before
    /// witnesses were kept.
    pub witness: Option<(Vec<u8>, Vec<u8>)>,
}

/// A referral a peer offered, checked and sealed, with our receipt for it.
#[derive(Debug, Clone)]
pub struct NewOffer {
    pub receipt: ReceiptRecord,
    pub record: ReferralRecord,
    pub event: ReferralEvent,
    pub wrapped_key: Option<Vec<u8>>,
    pub audit: Vec<AuditEntry>,
}

/// A new outbound referral, with what is stored with it (`create_referrals`).
#[derive(Debug, Clone)]
pub struct NewCreate {
    pub record: ReferralRecord,
    /// The caller's request ID (retries of one request make one referral).
    pub request_key: String,
    pub request_digest: Vec<u8>,
    pub event: ReferralEvent,
    pub notice: NewNotice,
    pub audit: Vec<AuditEntry>,
    /// The data key the summary is sealed under, wrapped: a sender's key is
    /// its client's (`SHARED_KEY_PREFIX`), and is stored with the referral.
    pub wrapped_key: Vec<u8>,
}

/// Data keys shared by a client's outbound referrals are named so: one is
/// destroyed when the last referral holding content under it is purged.
pub const SHARED_KEY_PREFIX: &str = "subject:";

/// A checked receipt for one of our notices, with what it implies.
#[derive(Debug, Clone)]
pub struct AcceptedReceipt {
    /// The notice it acknowledges (`Notice::id`).
    pub notice_row: i64,
    pub receipt: ReceiptRecord,
    /// The change to the referral it is about, if any.
    pub change: Option<(String, ReferralChange)>,
    /// Audit records written if the receipt is new.
    pub audit: Vec<AuditEntry>,
}

/// A change to a referral, applied only if its state is still `expected`.
#[derive(Debug, Clone, Default)]
pub struct ReferralChange {
    pub expected_states: Vec<String>,
    pub state: Option<String>,
    pub event: Option<ReferralEvent>,
    pub owner: Option<String>,
    pub team: Option<Option<String>>,
    pub purge_status: Option<String>,
    pub purged_at_ms: Option<i64>,
    /// Deletes the case content (a purge): the summary and the content of
    /// every history event.
    pub purge_summary: bool,
    /// Replaces the stored terms (a purge: the same without their free text).
    pub purge_terms: Option<Vec<u8>>,
    /// Apply only if the purge status is still this one.
    pub expected_purge_status: Option<String>,
    /// Destroys this data key (a purge): old copies can no longer be read.
    pub destroy_key: Option<String>,
    pub notices: Vec<NewNotice>,
    /// Audit records written with the change.
    pub audit: Vec<AuditEntry>,
    pub now_ms: i64,
}

/// A checkpoint this node signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub at_ms: i64,
    /// Encoded `AuditCheckpoint`, exactly as signed.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A peer's countersignature of one of our checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessRecord {
    pub seq: i64,
    pub witness_org: String,
    /// Encoded `CheckpointWitness`, exactly as signed.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    pub at_ms: i64,
}

/// Filters for listing referrals.
#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    pub outbound: Option<bool>,
    pub state: Option<String>,
    pub peer_org: Option<String>,
}

/// A refused call, recorded without any payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityEvent {
    pub at_ms: i64,
    pub surface: String,
    pub reason: String,
    pub key_fingerprint: Option<String>,
    pub org_id: Option<String>,
    pub remote_addr: Option<String>,
    pub method: Option<String>,
}

/// A referral offered by a peer, stored with its first event and the data
/// key its summary is sealed under (a key of its own, `record.key_id`).
#[derive(Debug, Clone, Copy)]
pub struct NewInbound<'a> {
    pub record: &'a ReferralRecord,
    pub event: &'a ReferralEvent,
    pub wrapped_key: Option<&'a [u8]>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend, for logs: "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// Closes the connections (SQLite checkpoints its log).
    async fn close(&self);

    async fn meta_get(&self, key: &str) -> Result<Option<String>>;
    /// Stores `value` under `key` unless a value is there; returns the value kept.
    async fn meta_init(&self, key: &str, value: &str) -> Result<String>;
    async fn meta_set(&self, key: &str, value: &str) -> Result<()>;

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
    /// Withdraws a consent and applies the changes to its referrals, together.
    async fn withdraw_consent_with(
        &self,
        consent_id: &str,
        changes: &[(String, ReferralChange)],
        now_ms: i64,
        audit: &[AuditEntry],
    ) -> Result<bool>;
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
    /// The wrapped data key `key_id`, stored as `new_wrapped` if it did not exist.
    async fn data_key(&self, key_id: &str, new_wrapped: &[u8], now_ms: i64) -> Result<Vec<u8>>;
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
    ) -> Result<Vec<(String, i64, i64, Vec<u8>)>>;
    /// Rewrites events: `(referral_id, seq, detail, content)`.
    async fn rewrite_history(
        &self,
        items: &[(String, i64, Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<()>;
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
    /// Outbound referrals still holding data at their recipient whose consent
    /// has expired (and was not withdrawn) by `now_ms`.
    async fn referrals_with_expired_consent(&self, now_ms: i64) -> Result<Vec<ReferralRecord>>;
    /// Closed outbound referrals to `peer`, not yet purged, closed before `before_ms`.
    async fn closed_referrals_before(
        &self,
        peer: &OrgId,
        before_ms: i64,
    ) -> Result<Vec<ReferralRecord>>;
    /// The wrapped data key `key_id`, if it still exists.
    async fn find_data_key(&self, key_id: &str) -> Result<Option<Vec<u8>>>;
    /// After a purge: make sure no copy of the deleted content lingers in
    /// the database's files (SQLite: truncate the write-ahead log).
    async fn after_purge(&self) -> Result<()>;
    /// SQLite: the WAL checkpoints run after purges, by outcome (`done`,
    /// `busy`, `failed`); empty for PostgreSQL.
    fn wal_checkpoints(&self) -> Vec<(&'static str, u64)>;
    /// Wrapped data keys after `after_key_id` in key order, at most `limit`:
    /// `(key_id, wrapped)`, for rewrapping under a new master-key generation.
    async fn wrapped_data_keys(
        &self,
        after_key_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, Vec<u8>)>>;
    /// Replaces a wrapped data key if it is still `old` (a purge meanwhile wins).
    async fn rewrap_data_key(&self, key_id: &str, old: &[u8], new: &[u8]) -> Result<bool>;
    /// Outbox payloads sealed under the master key and still to be sent,
    /// after row `after_id`: `(id, notice_id, payload)`.
    async fn sealed_notices(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>>;
    /// Replaces an outbox payload if it is still `old` and still to be sent.
    async fn reseal_notice(&self, id: i64, old: &[u8], new: &[u8]) -> Result<bool>;
    /// Rewrites the data-key table when deleted keys may linger in its files
    /// as dead rows (PostgreSQL: `VACUUM FULL data_keys`); whether it did.
    async fn compact_data_keys(&self) -> Result<bool>;
    /// Tells the other processes on this database (replicas of this node)
    /// that something changed; PostgreSQL: NOTIFY, SQLite: nothing (one process).
    async fn publish_change(&self, payload: &str) -> Result<()>;
    /// What the other processes published, as it comes; `None` where there
    /// are none (SQLite).
    async fn subscribe_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>>;

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
    /// `org`'s checkpoints witnessed: the highest position, and how many
    /// were received since `since_ms` (its quota `limits.peer_checkpoints_per_day`).
    async fn witnessed_stats(&self, org: &OrgId, since_ms: i64) -> Result<(Option<i64>, i64)>;
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

    /// Records `n` refusals like `event`, aggregated per minute with the
    /// others of the same surface, reason, key, peer, address (without its
    /// port) and method; how many that minute's row counts now (1: the first).
    async fn record_security_event(&self, event: &SecurityEvent, n: i64) -> Result<i64>;
    /// Newest first, each with how many refusals its row counts.
    async fn security_events(&self, limit: i64) -> Result<Vec<(SecurityEvent, i64)>>;
    /// Deletes rows older than `before_ms`, then the oldest beyond `keep`.
    async fn prune_security_events(&self, before_ms: i64, keep: i64) -> Result<u64>;
}

impl SecurityEvent {
    /// The remote address without its port: a flood from one host with
    /// new connections is one address.
    pub fn remote_host(&self) -> Option<String> {
        self.remote_addr.as_deref().map(|a| {
            a.parse::<std::net::SocketAddr>()
                .map(|s| s.ip().to_string())
                .unwrap_or_else(|_| a.to_owned())
        })
    }

    /// The row a refusal is counted in: its minute and everything but the time.
    pub fn aggregation_key(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "{}|{}|{}|{}|{}|{}|{}",
            self.at_ms.div_euclid(60_000),
            self.surface,
            self.reason,
            o(&self.key_fingerprint),
            o(&self.org_id),
            self.remote_host().unwrap_or_default(),
            o(&self.method)
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_state_this_build_does_not_know_is_an_error() {
        let mut r = ReferralRecord {
            referral_id: "r1".into(),
            outbound: true,
            peer_org: OrgId::parse("peer", "prison-b").unwrap(),
            owner: "alice".into(),
            team: None,
            consent_id: None,
            pseudonym: String::new(),
            need_areas: String::new(),
            services: String::new(),
            urgency: "routine".into(),
            key_id: "subject:x".into(),
            summary: None,
            terms: vec![],
            state: "accepted".into(),
            purge_status: "none".into(),
            purged_at_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: None,
        };
        assert_eq!(
            r.current_state().unwrap(),
            crate::domain::ReferralState::Accepted
        );
        r.state = "archived".into();
        let e = r.current_state().unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
    }
}
