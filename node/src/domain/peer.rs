//! A peering between this node and another organisation's node, and the
//! rules for changing its state.

use super::org::{OrgId, OrgProfile};
use crate::error::Error;

/// A notice about the peering itself, between the two nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum PeeringNotice {
    /// The sender's view of the peering.
    State(PeerState),
    /// The sender's profile, changed.
    Profile(OrgProfile),
    /// The sender's new key, announced by its old one.
    KeyRotation(SignedRotation),
}

/// A node's request to join the inviter whose invitation it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    pub invitation_id: String,
    /// The invitation's single-use secret.
    pub secret: Vec<u8>,
    /// The joining organisation's profile.
    pub profile: OrgProfile,
    /// Where the joining node's federation port is reached.
    pub endpoint: String,
}

/// A key rotation as signed: the payload in its wire encoding, signed by
/// the old key and, as proof of possession, by the new one
/// (`protocol::rotation` makes and checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRotation {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    pub new_key_signature: Vec<u8>,
}

/// This side's view of a peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    Pending,
    Active,
    Suspended,
    Revoked,
    Rejected,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Pending => "pending",
            PeerState::Active => "active",
            PeerState::Suspended => "suspended",
            PeerState::Revoked => "revoked",
            PeerState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => PeerState::Pending,
            "active" => PeerState::Active,
            "suspended" => PeerState::Suspended,
            "revoked" => PeerState::Revoked,
            "rejected" => PeerState::Rejected,
            _ => return None,
        })
    }

    /// Revoked and rejected peerings never come back.
    pub fn is_final(self) -> bool {
        matches!(self, PeerState::Revoked | PeerState::Rejected)
    }
}

/// Whose approval a pending peering waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Awaiting {
    /// This node's administrator (the peer joined through our invitation).
    Local,
    /// The other administrator (we joined through theirs).
    Remote,
    None,
}

impl Awaiting {
    pub fn as_str(self) -> &'static str {
        match self {
            Awaiting::Local => "local",
            Awaiting::Remote => "remote",
            Awaiting::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "local" => Awaiting::Local,
            "remote" => Awaiting::Remote,
            "none" => Awaiting::None,
            _ => return None,
        })
    }
}

/// An administrator's decision about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAction {
    Approve,
    Reject,
    Suspend,
    Resume,
    Revoke,
}

impl PeerAction {
    /// The state an action leads to from `current`, or why it may not be taken.
    pub fn apply(self, current: PeerState, awaiting: Awaiting) -> Result<PeerState, Error> {
        use PeerAction::*;
        use PeerState::*;
        let next = match (self, current) {
            (Approve, Pending) if awaiting == Awaiting::Local => Active,
            (Approve, Pending) => {
                return Err(Error::FailedPrecondition(
                    "this peering waits for the other administrator's approval".into(),
                ));
            }
            (Reject, Pending) if awaiting == Awaiting::Local => Rejected,
            (Suspend, Active) => Suspended,
            (Resume, Suspended) => Active,
            (Revoke, Pending | Active | Suspended) => Revoked,
            (_, state) => {
                return Err(Error::FailedPrecondition(format!(
                    "peer is {}; that action is not allowed",
                    state.as_str()
                )));
            }
        };
        Ok(next)
    }
}

/// A peer as this node records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Peer {
    pub org_id: OrgId,
    pub profile: OrgProfile,
    pub state: PeerState,
    pub awaiting: Awaiting,
    /// What the other side last told us of its own view.
    pub remote_state: Option<PeerState>,
    pub endpoint: String,
    /// Fingerprint of the peer's newest pinned key.
    pub key_fingerprint: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_seen_at_ms: Option<i64>,
    /// Notices queued for the peer and not yet delivered.
    pub pending_notices: i64,
}

impl Peer {
    /// Whether both administrators' decisions allow calls right now.
    pub fn exchange_allowed(&self) -> bool {
        self.state == PeerState::Active && self.remote_state == Some(PeerState::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_rules() {
        use PeerAction::*;
        use PeerState::*;
        assert_eq!(Approve.apply(Pending, Awaiting::Local).unwrap(), Active);
        assert!(Approve.apply(Pending, Awaiting::Remote).is_err());
        assert_eq!(Suspend.apply(Active, Awaiting::None).unwrap(), Suspended);
        assert_eq!(Resume.apply(Suspended, Awaiting::None).unwrap(), Active);
        assert_eq!(Revoke.apply(Suspended, Awaiting::None).unwrap(), Revoked);
        assert!(Resume.apply(Revoked, Awaiting::None).is_err());
        assert!(Approve.apply(Revoked, Awaiting::None).is_err());
        assert!(Reject.apply(Active, Awaiting::None).is_err());
    }
}
