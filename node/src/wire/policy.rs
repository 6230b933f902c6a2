//! A peer's policy on the wire (the administrator sets it; it is stored
//! in its encoding).

use crate::domain::policy::PeerPolicy;
use crate::domain::*;
use crate::error::FieldError;
use exitnet_proto::pb;

impl PeerPolicy {
    /// Reads a policy from its stored encoding (`encoded`).
    pub fn decode_stored(bytes: &[u8]) -> Result<Self, String> {
        use prost::Message;
        let p = pb::PeerPolicy::decode(bytes).map_err(|e| e.to_string())?;
        Self::from_pb(p).map_err(|e| e.to_string())
    }

    /// The policy's stored encoding.
    pub fn encoded(&self) -> Vec<u8> {
        use prost::Message;
        self.to_pb().encode_to_vec()
    }

    pub fn from_pb(p: pb::PeerPolicy) -> Result<Self, FieldError> {
        let pb::PeerPolicy {
            need_areas,
            data_categories,
            purposes,
            retention_days,
        } = p;
        if retention_days > 3650 {
            return Err(FieldError::new("policy.retention_days", "at most 3650"));
        }
        Ok(Self {
            need_areas: code_list("policy.need_areas", need_areas, NeedArea::from_pb)?,
            data_categories: code_list(
                "policy.data_categories",
                data_categories,
                DataCategory::from_pb,
            )?,
            purposes: code_list("policy.purposes", purposes, Purpose::from_pb)?,
            retention_days,
        })
    }

    pub fn to_pb(&self) -> pb::PeerPolicy {
        pb::PeerPolicy {
            need_areas: self.need_areas.iter().map(|v| v.to_pb()).collect(),
            data_categories: self.data_categories.iter().map(|v| v.to_pb()).collect(),
            purposes: self.purposes.iter().map(|v| v.to_pb()).collect(),
            retention_days: self.retention_days,
        }
    }
}
