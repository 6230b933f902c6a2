//! Per-peer policy: what may be sent to and accepted from each peer, on top
//! of each consent. Checked at both ends.

use crate::domain::code_list;
use crate::domain::consent::ConsentTerms;
use crate::domain::referral::CaseSummary;
use crate::domain::{DataCategory, NeedArea, Purpose, Service};
use crate::error::{Error, FieldError, Result};
use exitnet_proto::pb;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub need_areas: Vec<NeedArea>,
    pub data_categories: Vec<DataCategory>,
    pub purposes: Vec<Purpose>,
    pub retention_days: u32,
}

impl Default for PeerPolicy {
    /// Conservative: all need areas and purposes, the structured fields, no narrative.
    fn default() -> Self {
        Self {
            need_areas: NeedArea::ALL.to_vec(),
            data_categories: DataCategory::ALL
                .iter()
                .copied()
                .filter(|c| *c != DataCategory::NeedsNarrative)
                .collect(),
            purposes: Purpose::ALL.to_vec(),
            retention_days: 0,
        }
    }
}

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

    /// Refuses (PERMISSION_DENIED naming the field) what the policy for
    /// `peer` does not allow. `prefix` names the message part (`""` or `offer.`).
    pub fn check(
        &self,
        peer: &str,
        prefix: &str,
        need_areas: &[NeedArea],
        services: &[Service],
        summary: &CaseSummary,
        terms: &ConsentTerms,
    ) -> Result<()> {
        let deny = |m: String| Err(Error::PermissionDenied(m));
        for a in need_areas {
            if !self.need_areas.contains(a) {
                return deny(format!(
                    "{prefix}need_areas: {a} is not allowed by the policy for {peer}"
                ));
            }
        }
        for s in services {
            if !self.need_areas.contains(&s.need_area()) {
                return deny(format!(
                    "{prefix}services: {s} is not allowed by the policy for {peer}"
                ));
            }
        }
        for (cat, field) in summary.categories() {
            if !self.data_categories.contains(&cat) {
                return deny(format!(
                    "{prefix}{field}: {cat} is not allowed by the policy for {peer}"
                ));
            }
        }
        for p in &terms.purposes {
            if !self.purposes.contains(p) {
                return deny(format!(
                    "{prefix}terms.purposes: {p} is not allowed by the policy for {peer}"
                ));
            }
        }
        Ok(())
    }
}

/// The policy for a peer: stored, or the default.
pub async fn for_peer(
    store: &dyn crate::store::Store,
    org: &crate::domain::OrgId,
) -> Result<(PeerPolicy, bool)> {
    use prost::Message;
    match store.meta_get(&format!("policy:{org}")).await? {
        Some(hex) => {
            let bytes = crate::domain::unhex(&hex)
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored policy: not hex")))?;
            let p =
                pb::PeerPolicy::decode(bytes.as_slice()).map_err(|e| Error::Internal(e.into()))?;
            Ok((
                PeerPolicy::from_pb(p)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("stored policy: {e}")))?,
                true,
            ))
        }
        None => Ok((PeerPolicy::default(), false)),
    }
}

pub async fn set_for_peer(
    store: &dyn crate::store::Store,
    org: &crate::domain::OrgId,
    p: &PeerPolicy,
) -> Result<()> {
    use prost::Message;
    store
        .meta_set(
            &format!("policy:{org}"),
            &crate::identity::hex(&p.to_pb().encode_to_vec()),
        )
        .await
}
