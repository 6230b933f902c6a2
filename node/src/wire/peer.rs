//! A peer's state and the administrator's actions on the wire.

use crate::domain::*;
use crate::error::FieldError;
use exitnet_proto::pb;

impl PeerState {
    pub fn to_pb(self) -> pb::PeerState {
        match self {
            PeerState::Pending => pb::PeerState::Pending,
            PeerState::Active => pb::PeerState::Active,
            PeerState::Suspended => pb::PeerState::Suspended,
            PeerState::Revoked => pb::PeerState::Revoked,
            PeerState::Rejected => pb::PeerState::Rejected,
        }
    }

    pub fn from_pb(field: &str, v: i32) -> Result<Self, FieldError> {
        match pb::PeerState::try_from(v) {
            Ok(pb::PeerState::Pending) => Ok(PeerState::Pending),
            Ok(pb::PeerState::Active) => Ok(PeerState::Active),
            Ok(pb::PeerState::Suspended) => Ok(PeerState::Suspended),
            Ok(pb::PeerState::Revoked) => Ok(PeerState::Revoked),
            Ok(pb::PeerState::Rejected) => Ok(PeerState::Rejected),
            _ => Err(FieldError::new(
                field,
                format!("unknown or unspecified value {v}"),
            )),
        }
    }
}

impl PeerAction {
    pub fn from_pb(field: &str, v: i32) -> Result<Self, FieldError> {
        match pb::PeerAction::try_from(v) {
            Ok(pb::PeerAction::Approve) => Ok(PeerAction::Approve),
            Ok(pb::PeerAction::Reject) => Ok(PeerAction::Reject),
            Ok(pb::PeerAction::Suspend) => Ok(PeerAction::Suspend),
            Ok(pb::PeerAction::Resume) => Ok(PeerAction::Resume),
            Ok(pb::PeerAction::Revoke) => Ok(PeerAction::Revoke),
            _ => Err(FieldError::new(
                field,
                format!("unknown or unspecified value {v}"),
            )),
        }
    }
}

impl PeeringNotice {
    /// A peer's notice, read; referral messages and checkpoints are not
    /// peering notices (they have handlers of their own).
    pub fn from_pb(notice: pb::notify_request::Notice) -> Result<Self, FieldError> {
        use pb::notify_request::Notice;
        Ok(match notice {
            Notice::Message(_) | Notice::Checkpoint(_) => {
                return Err(FieldError::new("notice", "not a peering notice"));
            }
            Notice::State(s) => PeeringNotice::State(PeerState::from_pb("state", s)?),
            Notice::Profile(p) => {
                PeeringNotice::Profile(OrgProfile::from_pb(p).map_err(|e| e.within("profile"))?)
            }
            Notice::KeyRotation(k) => PeeringNotice::KeyRotation(SignedRotation {
                payload: k.payload,
                signature: k.signature,
                new_key_signature: k.new_key_signature,
            }),
        })
    }

    pub fn to_pb(&self) -> pb::notify_request::Notice {
        use pb::notify_request::Notice;
        match self {
            PeeringNotice::State(s) => Notice::State(s.to_pb() as i32),
            PeeringNotice::Profile(p) => Notice::Profile(p.to_pb()),
            PeeringNotice::KeyRotation(k) => Notice::KeyRotation(pb::SignedKeyRotation {
                payload: k.payload.clone(),
                signature: k.signature.clone(),
                new_key_signature: k.new_key_signature.clone(),
            }),
        }
    }
}

impl JoinRequest {
    /// A joining node's request, checked field by field (its secret's
    /// length is the invitation's business, `peering::accept_join`).
    pub fn from_pb(req: pb::JoinRequest) -> Result<Self, FieldError> {
        let pb::JoinRequest {
            invitation_id,
            secret,
            profile,
            endpoint,
            protocol_version: _,
        } = req;
        let profile =
            OrgProfile::from_pb(profile.ok_or_else(|| FieldError::new("profile", "required"))?)
                .map_err(|e| e.within("profile"))?;
        endpoint_check("endpoint", &endpoint)?;
        if invitation_id.is_empty() || invitation_id.len() > 64 {
            return Err(FieldError::new(
                "invitation_id",
                "must be 1 to 64 characters",
            ));
        }
        Ok(JoinRequest {
            invitation_id,
            secret,
            profile,
            endpoint,
        })
    }

    pub fn to_pb(&self) -> pb::JoinRequest {
        pb::JoinRequest {
            invitation_id: self.invitation_id.clone(),
            secret: self.secret.clone(),
            profile: Some(self.profile.to_pb()),
            endpoint: self.endpoint.clone(),
            protocol_version: exitnet_proto::PROTOCOL_VERSION,
        }
    }
}
