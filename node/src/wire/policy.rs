//! A peer's policy on the wire (the administrator sets it; it is stored
//! in its encoding).

use crate::domain::policy::PeerPolicy;
use crate::domain::*;
use crate::error::FieldError;
use exitnet_proto::pb;

impl PeerPolicy {
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
