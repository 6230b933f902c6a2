//! The client API's requests that create something, read into the services'
//! inputs and checked (each error naming its field). The request digest is of
//! the request as sent: a retry with the same request ID must carry the same.

use crate::consents::NewConsent;
use crate::domain::consent::{ConsentTerms, subject_ref};
use crate::domain::referral::CaseSummary;
use crate::domain::*;
use crate::error::FieldError;
use crate::referrals::NewReferral;
use exitnet_proto::pb;
use prost::Message;

impl NewReferral {
    pub fn from_pb(r: pb::CreateReferralRequest) -> Result<Self, FieldError> {
        let request_digest = crate::crypto::sha256(&r.encode_to_vec());
        let pb::CreateReferralRequest {
            request_id,
            consent_id,
            recipient_org,
            need_areas,
            services,
            urgency,
            summary,
        } = r;
        crate::domain::request_id_check(&request_id)?;
        id_check("consent_id", &consent_id)?;
        let need_areas = code_list("need_areas", need_areas, NeedArea::from_pb)?;
        if need_areas.is_empty() {
            return Err(FieldError::new("need_areas", "at least one need area"));
        }
        Ok(Self {
            request_id,
            request_digest,
            consent_id,
            recipient: OrgId::parse("recipient_org", &recipient_org)?,
            need_areas,
            services: code_list("services", services, Service::from_pb)?,
            urgency: Urgency::from_pb("urgency", urgency)?,
            summary: CaseSummary::from_pb(
                "summary",
                summary.ok_or_else(|| FieldError::new("summary", "required"))?,
            )?,
        })
    }
}
impl NewConsent {
    pub fn from_pb(r: pb::RecordConsentRequest, now: i64) -> Result<Self, FieldError> {
        let request_digest = {
            use prost::Message;
            crate::crypto::sha256(&r.encode_to_vec())
        };
        let pb::RecordConsentRequest {
            request_id,
            subject_ref: subject,
            terms,
            collection_method,
            witness,
        } = r;
        crate::domain::request_id_check(&request_id)?;
        let terms = ConsentTerms::from_pb(
            terms.ok_or_else(|| FieldError::new("terms", "required"))?,
            now,
        )?;
        let collection_method = CollectionMethod::from_pb("collection_method", collection_method)?;
        bounded_text("witness", &witness, 200)?;
        if collection_method == CollectionMethod::VerbalWitnessed && witness.trim().is_empty() {
            return Err(FieldError::new("witness", "required for a verbal consent"));
        }
        Ok(Self {
            request_id,
            request_digest,
            subject_ref: subject_ref("subject_ref", &subject)?,
            terms,
            collection_method,
            witness,
        })
    }
}
