//! The audit trail's records as data: an entry, its place in the chain and
//! its hash. Below storage and every service (the trail's logic is in
//! `crate::audit`).

/// Hash of the record before the first one.
pub const GENESIS: [u8; 32] = [0; 32];

/// An audited action, as the code that performs it describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// `staff`, `system`, `peer`, `admin` or `node`.
    pub actor_kind: String,
    pub actor: String,
    pub role: String,
    pub on_behalf_of: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub consent_id: String,
    pub peer_org: String,
    pub result: String,
}

/// A record as stored: an entry at its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    #[serde(serialize_with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "hex_bytes")]
    pub hash: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::hex(b))
}

impl AuditEntry {
    pub(crate) fn new(
        at_ms: i64,
        kind: &str,
        actor: &str,
        action: &str,
        object_type: &str,
        object_id: &str,
    ) -> Self {
        Self {
            at_ms,
            actor_kind: kind.into(),
            actor: actor.into(),
            action: action.into(),
            object_type: object_type.into(),
            object_id: object_id.into(),
            result: "ok".into(),
            ..Self::default()
        }
    }

    /// A peer organisation (a message or notice it sent).
    pub fn peer(at_ms: i64, org: &str, action: &str, object_type: &str, object_id: &str) -> Self {
        let mut e = Self::new(at_ms, "peer", org, action, object_type, object_id);
        e.peer_org = org.into();
        e
    }

    /// The administrator, through the local socket.
    pub fn admin(at_ms: i64, action: &str, object_type: &str, object_id: &str) -> Self {
        Self::new(at_ms, "admin", "admin", action, object_type, object_id)
    }

    /// The node itself (its scheduler, its sender).
    pub fn node(at_ms: i64, org: &str, action: &str, object_type: &str, object_id: &str) -> Self {
        Self::new(at_ms, "node", org, action, object_type, object_id)
    }

    /// The same actor at the same moment, for another action or object.
    pub fn about(&self, action: &str, object_type: &str, object_id: &str) -> Self {
        Self {
            action: action.into(),
            object_type: object_type.into(),
            object_id: object_id.into(),
            consent_id: String::new(),
            result: "ok".into(),
            ..self.clone()
        }
    }

    pub fn consent(mut self, consent_id: Option<&str>) -> Self {
        self.consent_id = consent_id.unwrap_or_default().into();
        self
    }

    pub fn with_peer(mut self, org: &str) -> Self {
        self.peer_org = org.into();
        self
    }

    pub fn result(mut self, result: &str) -> Self {
        self.result = result.into();
        self
    }
}

/// The record hash: SHA-256 over a domain tag, the position, the time, every
/// field (length-prefixed, so no two field lists encode alike) and the
/// previous hash.
pub fn record_hash(seq: i64, prev_hash: &[u8], e: &AuditEntry) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"exitnet-audit-v1\0");
    ctx.update(&seq.to_be_bytes());
    ctx.update(&e.at_ms.to_be_bytes());
    for f in [
        &e.actor_kind,
        &e.actor,
        &e.role,
        &e.on_behalf_of,
        &e.action,
        &e.object_type,
        &e.object_id,
        &e.consent_id,
        &e.peer_org,
        &e.result,
    ] {
        ctx.update(&(f.len() as u32).to_be_bytes());
        ctx.update(f.as_bytes());
    }
    ctx.update(&(prev_hash.len() as u32).to_be_bytes());
    ctx.update(prev_hash);
    ctx.finish().as_ref().to_vec()
}

/// Filters for listing the trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_id: Option<String>,
}
/// Which page of the trail a caller asks for: the filter, how many, after
/// which sequence number (0: from the start).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    pub size: i64,
    pub after_seq: i64,
}

/// One page of the trail, and the sequence number the next one starts
/// after (`None`: this was the last).
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    pub next_after_seq: Option<i64>,
}

/// A checkpoint of an organisation's audit chain as it travels: the encoded
/// payload exactly as signed, and the signature. Kept and forwarded as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A peer's countersignature of one of our checkpoints, as bytes signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedWitness {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// What a checkpoint says: the chain of `org_id` held `seq` records, the last
/// hashing to `head_sha256`, at `at_ms`, signed with `key_fingerprint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub org_id: String,
    pub seq: u64,
    pub head_sha256: Vec<u8>,
    pub at_ms: Option<i64>,
    pub key_fingerprint: String,
}

/// What a witness says: `witness_org` saw `signer_org`'s checkpoint number
/// `seq` (by the digest of its payload) at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessing {
    pub checkpoint_sha256: Vec<u8>,
    pub signer_org: String,
    pub seq: u64,
    pub witness_org: String,
    pub at_ms: Option<i64>,
    pub key_fingerprint: String,
}
