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
