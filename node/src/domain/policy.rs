//! A peer's policy: what may be sent to and accepted from one peer, on top
//! of each consent; checked at both ends.

use super::consent::ConsentTerms;
use super::referral::CaseSummary;
use super::{DataCategory, NeedArea, Purpose, Service};
use crate::error::{Error, Result};

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
