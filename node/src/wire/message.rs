//! A referral message's body on the wire and back. A received offer is
//! checked here field by field (`offer.…`): its shape; whether its terms
//! cover it and this node's policy takes it are `referrals::receive`'s.

use crate::domain::consent::ConsentTerms;
use crate::domain::message::{Offer, ReferralMessage};
use crate::domain::referral::CaseSummary;
use crate::domain::{NeedArea, Service, Urgency, WithdrawalCause, code_list, id_check};
use crate::error::FieldError;
use crate::wire::change::{state_change, transition};
use crate::wire::time::{from_timestamp, to_timestamp};
use exitnet_proto::pb;
use pb::federation_message::Body;

impl ReferralMessage {
    /// A peer's message, checked field by field.
    pub fn from_pb(body: Body) -> Result<Self, FieldError> {
        Ok(match body {
            Body::Offer(o) => ReferralMessage::Offer(Box::new(Offer::from_pb(o)?)),
            Body::Status(s) => {
                id_check("status.referral_id", &s.referral_id)?;
                let change = s
                    .change
                    .ok_or_else(|| FieldError::new("status.change", "required"))?;
                ReferralMessage::Status {
                    transition: transition("status.change", &change)?,
                    at_ms: change.at.as_ref().map_or(0, from_timestamp),
                    referral_id: s.referral_id,
                }
            }
            Body::Withdrawal(w) => {
                id_check("withdrawal.referral_id", &w.referral_id)?;
                ReferralMessage::Withdrawal {
                    referral_id: w.referral_id,
                    cause: WithdrawalCause::from_pb("withdrawal.cause", w.cause).ok(),
                }
            }
        })
    }

    /// The message's body as `by_org` sends it.
    pub fn to_pb(&self, by_org: &str) -> Body {
        match self {
            ReferralMessage::Offer(o) => Body::Offer(o.to_pb()),
            ReferralMessage::Status {
                referral_id,
                transition,
                at_ms,
            } => Body::Status(pb::ReferralStatus {
                referral_id: referral_id.clone(),
                change: Some(pb::StateChange {
                    at: Some(to_timestamp(*at_ms)),
                    by_org: by_org.to_owned(),
                    ..state_change(transition)
                }),
            }),
            ReferralMessage::Withdrawal { referral_id, cause } => {
                Body::Withdrawal(pb::ReferralWithdrawal {
                    referral_id: referral_id.clone(),
                    cause: cause.map_or(0, WithdrawalCause::to_pb),
                })
            }
        }
    }
}

impl Offer {
    pub fn to_pb(&self) -> pb::ReferralOffer {
        pb::ReferralOffer {
            referral_id: self.referral_id.clone(),
            subject_pseudonym: self.subject_pseudonym.clone(),
            need_areas: self.need_areas.iter().map(|v| v.to_pb()).collect(),
            services: self.services.iter().map(|v| v.to_pb()).collect(),
            urgency: self.urgency.to_pb(),
            summary: Some(self.summary.to_pb()),
            terms: Some(self.terms.to_pb()),
            consent_ref: self.consent_ref.clone(),
        }
    }

    /// A peer's offer, checked: nothing is trusted because a peer sent it.
    pub fn from_pb(offer: pb::ReferralOffer) -> Result<Self, FieldError> {
        let pb::ReferralOffer {
            referral_id,
            subject_pseudonym,
            need_areas,
            services,
            urgency,
            summary,
            terms,
            consent_ref,
        } = offer;
        id_check("offer.referral_id", &referral_id)?;
        if subject_pseudonym.len() != 32
            || !subject_pseudonym.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(FieldError::new(
                "offer.subject_pseudonym",
                "must be 32 hex characters",
            ));
        }
        let need_areas = code_list("offer.need_areas", need_areas, NeedArea::from_pb)?;
        if need_areas.is_empty() {
            return Err(FieldError::new(
                "offer.need_areas",
                "at least one need area",
            ));
        }
        let services = code_list("offer.services", services, Service::from_pb)?;
        let urgency = Urgency::from_pb("offer.urgency", urgency)?;
        let summary = CaseSummary::from_pb(
            "offer.summary",
            summary.ok_or_else(|| FieldError::new("offer.summary", "required"))?,
        )?;
        let terms = ConsentTerms::from_received(
            terms.ok_or_else(|| FieldError::new("offer.terms", "required"))?,
        )
        .map_err(|e| e.within("offer"))?;
        Ok(Offer {
            referral_id,
            subject_pseudonym,
            need_areas,
            services,
            urgency,
            summary,
            terms,
            consent_ref,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An offer that passes every check of its shape.
    pub(crate) fn offer() -> pb::ReferralOffer {
        pb::ReferralOffer {
            referral_id: "r-1".into(),
            subject_pseudonym: "0123456789abcdef0123456789abcdef".into(),
            need_areas: vec![pb::NeedArea::MentalHealth as i32],
            services: vec![],
            urgency: pb::Urgency::Soon as i32,
            summary: Some(pb::CaseSummary {
                age_band: pb::AgeBand::AgeBand1824 as i32,
                ..Default::default()
            }),
            terms: Some(pb::ConsentTerms {
                recipients: vec!["prison-b".into()],
                purposes: vec![pb::Purpose::ExitSupport as i32],
                data_categories: vec![pb::DataCategory::AgeBand as i32],
                need_areas: vec![pb::NeedArea::MentalHealth as i32],
                legal_basis: Some(pb::LegalBasis {
                    kind: pb::LegalBasisKind::Consent as i32,
                    statute: String::new(),
                }),
                valid_from: Some(to_timestamp(1_700_000_000_000)),
                valid_until: Some(to_timestamp(1_800_000_000_000)),
                ..Default::default()
            }),
            consent_ref: "ref".into(),
        }
    }

    /// What a peer's offer must look like, field by field: each row a
    /// change to a valid offer and the field its refusal names.
    #[test]
    fn an_offer_is_read_field_by_field() {
        if let Err(e) = Offer::from_pb(offer()) {
            panic!("{e}");
        }
        type Change = fn(&mut pb::ReferralOffer);
        let cases: Vec<(Change, &str)> = vec![
            (|o| o.referral_id.clear(), "offer.referral_id"),
            (|o| o.referral_id = "a/b".into(), "offer.referral_id"),
            (
                |o| o.subject_pseudonym = "short".into(),
                "offer.subject_pseudonym",
            ),
            (
                |o| o.subject_pseudonym = "z".repeat(32),
                "offer.subject_pseudonym",
            ),
            (|o| o.need_areas.clear(), "offer.need_areas"),
            (|o| o.need_areas.push(99), "offer.need_areas"),
            (|o| o.services.push(99), "offer.services"),
            (|o| o.urgency = 0, "offer.urgency"),
            (|o| o.summary = None, "offer.summary"),
            (
                |o| {
                    if let Some(s) = o.summary.as_mut() {
                        s.languages = vec!["not a tag!".into()];
                    }
                },
                "offer.summary.languages",
            ),
            (|o| o.terms = None, "offer.terms"),
            (
                |o| {
                    if let Some(t) = o.terms.as_mut() {
                        t.recipients.clear();
                    }
                },
                "offer.terms.recipients",
            ),
        ];
        for (change, field) in cases {
            let mut o = offer();
            change(&mut o);
            let e = Offer::from_pb(o).expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    /// A status names a referral and a change its state allows; a
    /// withdrawal names a referral, and any cause (one unknown too) is read.
    #[test]
    fn a_status_and_a_withdrawal_are_read() {
        let status = |referral_id: &str, change: Option<pb::StateChange>| {
            ReferralMessage::from_pb(Body::Status(pb::ReferralStatus {
                referral_id: referral_id.into(),
                change,
            }))
        };
        let accepted = pb::StateChange {
            state: pb::ReferralState::Accepted as i32,
            at: Some(to_timestamp(5_000)),
            ..Default::default()
        };
        match status("r-1", Some(accepted.clone())) {
            Ok(ReferralMessage::Status {
                transition, at_ms, ..
            }) => assert_eq!(
                (transition.to(), at_ms),
                (crate::domain::ReferralState::Accepted, 5_000)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            status("", Some(accepted)).unwrap_err().field,
            "status.referral_id"
        );
        assert_eq!(status("r-1", None).unwrap_err().field, "status.change");
        let withdrawal = |cause| {
            ReferralMessage::from_pb(Body::Withdrawal(pb::ReferralWithdrawal {
                referral_id: "r-1".into(),
                cause,
            }))
        };
        assert!(matches!(
            withdrawal(99),
            Ok(ReferralMessage::Withdrawal { cause: None, .. })
        ));
        assert!(matches!(
            withdrawal(pb::WithdrawalCause::Retention as i32),
            Ok(ReferralMessage::Withdrawal {
                cause: Some(WithdrawalCause::Retention),
                ..
            })
        ));
    }
}
