//! What the services hand back, as the client API shows it.

use crate::access::View;
use crate::error::Error;
use crate::referrals::ReferralView;
use crate::wire::change::detail_to_pb;
use crate::wire::time::to_timestamp;
use exitnet_proto::pb;

impl TryFrom<ReferralView> for pb::Referral {
    type Error = Error;

    fn try_from(v: ReferralView) -> Result<Self, Error> {
        let ReferralView {
            record: r,
            view,
            history,
            summary,
        } = v;
        let metadata_only = view == View::MetadataOnly;
        let history = history
            .iter()
            .map(|e| {
                let detail = if metadata_only {
                    e.detail.clone().metadata_only()
                } else {
                    e.detail.clone()
                };
                pb::StateChange {
                    by_org: e.by_org.clone(),
                    at: Some(to_timestamp(e.at_ms)),
                    actor: e.actor.clone(),
                    ..detail_to_pb(e.state, &detail)
                }
            })
            .collect();
        let terms = Some(crate::wire::consent::terms_from_stored(&r.terms)?);
        Ok(pb::Referral {
            referral_id: r.referral_id.clone(),
            direction: if r.outbound {
                pb::Direction::Outbound
            } else {
                pb::Direction::Inbound
            } as i32,
            peer_org: r.peer_org.to_string(),
            consent_id: r.consent_id.clone().unwrap_or_default(),
            subject_pseudonym: if r.outbound || metadata_only {
                String::new()
            } else {
                r.pseudonym.clone()
            },
            need_areas: r.need_areas.iter().map(|v| v.to_pb()).collect(),
            services: r.services.iter().map(|v| v.to_pb()).collect(),
            urgency: r.urgency.to_pb(),
            summary: summary.filter(|_| !metadata_only).map(|s| s.to_pb()),
            state: r.state.to_pb(),
            history,
            purge_status: match r.purge_status.as_str() {
                "pending" => pb::PurgeStatus::Pending,
                "done" => pb::PurgeStatus::Done,
                "abandoned" => pb::PurgeStatus::Abandoned,
                _ => pb::PurgeStatus::None,
            } as i32,
            purged_at: r.purged_at_ms.map(to_timestamp),
            terms,
            owner: r.owner.clone(),
            created_at: Some(to_timestamp(r.created_at_ms)),
            updated_at: Some(to_timestamp(r.updated_at_ms)),
        })
    }
}
