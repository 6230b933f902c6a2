//! Consent terms and consents on the wire: checked on the way in (from a caller, a peer, or the database, which keeps their encoding), plain on the way out.

use crate::domain::consent::*;
use crate::domain::org::bounded_text;
use crate::domain::*;
use crate::error::FieldError;
use crate::wire::time::*;
use exitnet_proto::pb;
use prost::Message;

impl ConsentTerms {
    /// Validates terms from a caller (`now_ms` bounds the validity period).
    pub fn from_pb(t: pb::ConsentTerms, now_ms: i64) -> Result<Self, FieldError> {
        Self::parse(t, now_ms, true)
    }

    /// Terms as a recipient receives them (see `for_recipient`): free text is
    /// not required, and none is kept if a sender sent some anyway; times are
    /// coarsened to the day here too, whatever the sender did.
    pub fn from_received(t: pb::ConsentTerms) -> Result<Self, FieldError> {
        let recorded_as_of = t.valid_from.as_ref().map(from_timestamp).unwrap_or(0);
        let mut terms = Self::parse(t, recorded_as_of, false)?;
        terms.purpose_text.clear();
        terms.statute.clear();
        terms.valid_from_ms = floor_to_day(terms.valid_from_ms);
        terms.valid_until_ms = floor_to_day(terms.valid_until_ms);
        if terms.valid_until_ms <= terms.valid_from_ms {
            return Err(FieldError::new(
                "terms.valid_until",
                "must be at least a day after valid_from",
            ));
        }
        Ok(terms)
    }

    fn parse(t: pb::ConsentTerms, now_ms: i64, texts_required: bool) -> Result<Self, FieldError> {
        let pb::ConsentTerms {
            recipients,
            purposes,
            purpose_text,
            data_categories,
            need_areas,
            legal_basis,
            restrictions,
            valid_from,
            valid_until,
        } = t;
        if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
            return Err(FieldError::new(
                "terms.recipients",
                format!("1 to {MAX_RECIPIENTS} organisation IDs"),
            ));
        }
        let mut recipients = recipients
            .iter()
            .map(|r| OrgId::parse("terms.recipients", r))
            .collect::<Result<Vec<_>, _>>()?;
        recipients.sort();
        recipients.dedup();
        let purposes = code_list("terms.purposes", purposes, Purpose::from_pb)?;
        if purposes.is_empty() {
            return Err(FieldError::new("terms.purposes", "at least one purpose"));
        }
        bounded_text("terms.purpose_text", &purpose_text, 200)?;
        if texts_required && purposes.contains(&Purpose::Other) && purpose_text.trim().is_empty() {
            return Err(FieldError::new(
                "terms.purpose_text",
                "required with PURPOSE_OTHER",
            ));
        }
        let data_categories = code_list(
            "terms.data_categories",
            data_categories,
            DataCategory::from_pb,
        )?;
        let need_areas = code_list("terms.need_areas", need_areas, NeedArea::from_pb)?;
        if need_areas.is_empty() {
            return Err(FieldError::new(
                "terms.need_areas",
                "at least one need area",
            ));
        }
        let restrictions = code_list("terms.restrictions", restrictions, Restriction::from_pb)?;
        let lb = legal_basis.ok_or_else(|| FieldError::new("terms.legal_basis", "required"))?;
        let kind = LegalBasisKind::from_pb("terms.legal_basis.kind", lb.kind)?;
        bounded_text("terms.legal_basis.statute", &lb.statute, 200)?;
        if texts_required && kind == LegalBasisKind::Statute && lb.statute.trim().is_empty() {
            return Err(FieldError::new(
                "terms.legal_basis.statute",
                "required when the legal basis is a statute",
            ));
        }
        let valid_from_ms = match &valid_from {
            Some(ts) => crate::wire::time::checked_timestamp("terms.valid_from", ts)?,
            None => now_ms,
        };
        let valid_until_ms = crate::wire::time::checked_timestamp(
            "terms.valid_until",
            valid_until.as_ref().ok_or_else(|| {
                FieldError::new("terms.valid_until", "required: consent is time-limited")
            })?,
        )?;
        if valid_until_ms <= valid_from_ms {
            return Err(FieldError::new(
                "terms.valid_until",
                "must be after valid_from",
            ));
        }
        if valid_until_ms <= now_ms {
            return Err(FieldError::new("terms.valid_until", "is in the past"));
        }
        // Both are within the years 0001–9999 (checked above): no overflow.
        if (valid_from_ms - now_ms).abs() > MAX_SPAN_MS {
            return Err(FieldError::new(
                "terms.valid_from",
                "more than ten years away",
            ));
        }
        if valid_until_ms - now_ms > MAX_SPAN_MS || valid_until_ms - valid_from_ms > MAX_SPAN_MS {
            return Err(FieldError::new(
                "terms.valid_until",
                "more than ten years away",
            ));
        }
        Ok(Self {
            recipients,
            purposes,
            purpose_text,
            data_categories,
            need_areas,
            legal_basis: kind,
            statute: lb.statute,
            restrictions,
            valid_from_ms,
            valid_until_ms,
        })
    }

    /// Reads terms back from storage: validated as when recorded, but not
    /// against today's date (a stored consent may have expired since).
    pub fn from_stored(t: pb::ConsentTerms) -> Result<Self, FieldError> {
        let recorded_as_of = t.valid_from.as_ref().map(from_timestamp).unwrap_or(0);
        Self::from_pb(t, recorded_as_of)
    }

    /// Reads terms from their stored encoding (`terms_to_stored`).
    pub fn decode_stored(bytes: &[u8]) -> Result<Self, String> {
        use prost::Message;
        let t = pb::ConsentTerms::decode(bytes).map_err(|e| e.to_string())?;
        Self::from_stored(t).map_err(|e| e.to_string())
    }

    pub fn to_pb(&self) -> pb::ConsentTerms {
        pb::ConsentTerms {
            recipients: self.recipients.iter().map(|r| r.to_string()).collect(),
            purposes: self.purposes.iter().map(|v| v.to_pb()).collect(),
            purpose_text: self.purpose_text.clone(),
            data_categories: self.data_categories.iter().map(|v| v.to_pb()).collect(),
            need_areas: self.need_areas.iter().map(|v| v.to_pb()).collect(),
            legal_basis: Some(pb::LegalBasis {
                kind: self.legal_basis.to_pb(),
                statute: self.statute.clone(),
            }),
            restrictions: self.restrictions.iter().map(|v| v.to_pb()).collect(),
            valid_from: Some(to_timestamp(self.valid_from_ms)),
            valid_until: Some(to_timestamp(self.valid_until_ms)),
        }
    }
}

impl Consent {
    /// The wire view; without `with_subject` (auditors) no client reference,
    /// no free text.
    pub fn to_pb(&self, with_subject: bool) -> pb::Consent {
        let mut terms = self.terms.to_pb();
        if !with_subject {
            terms.purpose_text.clear();
        }
        pb::Consent {
            consent_id: self.consent_id.clone(),
            subject_ref: if with_subject && !self.subject_ref.starts_with(FORGOTTEN_PREFIX) {
                self.subject_ref.clone()
            } else {
                String::new()
            },
            terms: Some(terms),
            collection_method: self.collection_method.to_pb(),
            witness: if with_subject {
                self.witness.clone()
            } else {
                String::new()
            },
            recorded_by: self.recorded_by.clone(),
            recorded_at: Some(to_timestamp(self.recorded_at_ms)),
            withdrawn_at: self.withdrawn_at_ms.map(to_timestamp),
            team: self.team.clone().unwrap_or_default(),
        }
    }
}

/// Terms as a referral keeps them: encoded as they travel.
pub fn terms_to_stored(t: &ConsentTerms) -> Vec<u8> {
    t.to_pb().encode_to_vec()
}

/// What stands in for purged free text where the terms require some
/// (`purpose_text` with PURPOSE_OTHER).
pub const PURGED_TEXT: &str = "(purged)";

/// Stored terms that do not decode: an error, never read as empty terms.
fn stored(terms: &[u8]) -> Result<pb::ConsentTerms, crate::error::Error> {
    pb::ConsentTerms::decode(terms)
        .map_err(|e| crate::error::Error::Internal(anyhow::anyhow!("stored terms: {e}")))
}

/// Stored terms as the client API shows them.
pub fn terms_from_stored(terms: &[u8]) -> Result<pb::ConsentTerms, crate::error::Error> {
    stored(terms)
}

/// Terms as kept after a purge: the same without their free text.
pub fn purged_terms(terms: &[u8]) -> Result<Vec<u8>, crate::error::Error> {
    let mut t = stored(terms)?;
    if !t.purpose_text.is_empty() {
        t.purpose_text = PURGED_TEXT.into();
    }
    // A statute is meant to name a law, but it is typed: free text goes.
    if let Some(basis) = t.legal_basis.as_mut()
        && !basis.statute.is_empty()
    {
        basis.statute = PURGED_TEXT.into();
    }
    Ok(t.encode_to_vec())
}

/// When terms end (their `valid_until`), if they say.
pub fn terms_end(terms: &[u8]) -> Result<Option<i64>, crate::error::Error> {
    Ok(stored(terms)?.valid_until.as_ref().map(from_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> pb::ConsentTerms {
        pb::ConsentTerms {
            recipients: vec!["prison-b".into()],
            purposes: vec![pb::Purpose::ExitSupport as i32],
            data_categories: vec![pb::DataCategory::AgeBand as i32],
            need_areas: vec![pb::NeedArea::MentalHealth as i32],
            legal_basis: Some(pb::LegalBasis {
                kind: pb::LegalBasisKind::Consent as i32,
                statute: String::new(),
            }),
            valid_until: Some(to_timestamp(2_000_000)),
            ..Default::default()
        }
    }

    #[test]
    fn the_scope_check_names_the_first_thing_outside() {
        use crate::domain::referral::CaseSummary;
        use crate::domain::{AgeBand, Gender, Service};
        let t = ConsentTerms::from_pb(terms(), 1_000_000).unwrap();
        let b = OrgId::parse("org", "prison-b").unwrap();
        let c = OrgId::parse("org", "health-c").unwrap();
        let mh = [NeedArea::MentalHealth];
        let aged = CaseSummary {
            age_band: Some(AgeBand::AgeBand1824),
            ..Default::default()
        };
        let gendered = CaseSummary {
            gender: Some(Gender::Female),
            ..Default::default()
        };
        let none = CaseSummary::default();
        let housing = [Service::Housing];
        // To whom, need areas, services, summary, when: what the check says.
        type Case<'a> = (
            &'a OrgId,
            &'a [NeedArea],
            &'a [Service],
            &'a CaseSummary,
            i64,
            Result<(), OutOfScope>,
        );
        let cases: [Case; 7] = [
            (&b, &mh, &[], &aged, 1_500_000, Ok(())),
            (&b, &mh, &[], &none, 2_000_000, Err(OutOfScope::NotInForce)),
            (&b, &mh, &[], &none, 999_999, Err(OutOfScope::NotInForce)),
            (
                &c,
                &mh,
                &[],
                &none,
                1_500_000,
                Err(OutOfScope::NotARecipient),
            ),
            (
                &b,
                &[NeedArea::MentalHealth, NeedArea::SocialReintegration],
                &[],
                &none,
                1_500_000,
                Err(OutOfScope::NeedArea(NeedArea::SocialReintegration)),
            ),
            (
                &b,
                &mh,
                &housing,
                &none,
                1_500_000,
                Err(OutOfScope::Service(Service::Housing)),
            ),
            (
                &b,
                &mh,
                &[],
                &gendered,
                1_500_000,
                Err(OutOfScope::Category {
                    category: DataCategory::Gender,
                    field: "summary.gender",
                }),
            ),
        ];
        for (i, (to, areas, services, summary, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(t.scope(to, areas, services, summary, now), want, "case {i}");
        }
        let refusal = OutOfScope::Service(Service::Housing).content_refusal("offer.");
        assert_eq!(
            refusal.as_deref(),
            Some("offer.services: housing is outside the consent's need areas")
        );
        assert_eq!(OutOfScope::NotInForce.content_refusal(""), None);
    }

    #[test]
    fn valid_terms() {
        let t = ConsentTerms::from_pb(terms(), 1_000_000).unwrap();
        assert_eq!(t.valid_from_ms, 1_000_000);
        assert!(t.in_force(1_500_000));
        assert!(!t.in_force(2_000_000));
        assert_eq!(ConsentTerms::from_pb(t.to_pb(), 1_000_000).unwrap(), t);
    }

    #[test]
    fn each_recipient_gets_coarse_codes_only() {
        const T0: i64 = 20_000 * DAY_MS; // a midnight
        let mut t = terms();
        t.recipients = vec!["prison-b".into(), "health-c".into()];
        t.purposes = vec![pb::Purpose::Other as i32];
        t.purpose_text = "for Jane Doe, born 1990".into();
        t.legal_basis = Some(pb::LegalBasis {
            kind: pb::LegalBasisKind::Statute as i32,
            statute: "§115 case 2026-4711".into(),
        });
        t.valid_from = Some(to_timestamp(T0 + 37_123_456));
        t.valid_until = Some(to_timestamp(T0 + 30 * DAY_MS + 50_000_000));
        let t = ConsentTerms::from_pb(t, T0 + 37_123_456).unwrap();
        let b = OrgId::parse("r", "prison-b").unwrap();
        let c = OrgId::parse("r", "health-c").unwrap();
        let (tb, tc) = (t.for_recipient(&b), t.for_recipient(&c));
        assert_eq!(tb.recipients, vec![b]);
        assert_eq!((tb.purpose_text.as_str(), tb.statute.as_str()), ("", ""));
        assert_eq!(tb.valid_from_ms, T0);
        assert_eq!(tb.valid_until_ms, T0 + 30 * DAY_MS);
        // Apart from the recipient, the two copies are the same codes and dates.
        assert_eq!(
            ConsentTerms {
                recipients: vec![],
                ..tb.clone()
            },
            ConsentTerms {
                recipients: vec![],
                ..tc
            }
        );
        // A recipient accepts them although OTHER and STATUTE come without text,
        // and keeps no text a sender sent anyway.
        let mut wire = tb.to_pb();
        assert_eq!(ConsentTerms::from_received(wire.clone()).unwrap(), tb);
        wire.purpose_text = "leaked".into();
        wire.valid_until = Some(to_timestamp(T0 + 30 * DAY_MS + 1));
        assert_eq!(ConsentTerms::from_received(wire).unwrap(), tb);
        // The edge: the coarse end is never after the real one, and a consent
        // ending later today is not in force for a recipient now.
        let ends_today = ConsentTerms {
            valid_until_ms: T0 + 31 * DAY_MS + 1,
            ..t.clone()
        }
        .for_recipient(&OrgId::parse("r", "prison-b").unwrap());
        assert_eq!(ends_today.valid_until_ms, T0 + 31 * DAY_MS);
        assert!(ends_today.in_force(T0 + 31 * DAY_MS - 1));
        assert!(!ends_today.in_force(T0 + 31 * DAY_MS));
        // Less than a day inside one day: nothing a recipient could hold.
        let mut short = t.to_pb();
        short.valid_from = Some(to_timestamp(T0 + 1000));
        short.valid_until = Some(to_timestamp(T0 + 2000));
        assert_eq!(
            ConsentTerms::from_received(short).unwrap_err().field,
            "terms.valid_until"
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(pb::ConsentTerms, &str)> = vec![
            (
                pb::ConsentTerms {
                    recipients: vec![],
                    ..terms()
                },
                "terms.recipients",
            ),
            (
                pb::ConsentTerms {
                    recipients: vec!["Bad Org".into()],
                    ..terms()
                },
                "terms.recipients",
            ),
            (
                pb::ConsentTerms {
                    purposes: vec![],
                    ..terms()
                },
                "terms.purposes",
            ),
            (
                pb::ConsentTerms {
                    purposes: vec![pb::Purpose::Other as i32],
                    ..terms()
                },
                "terms.purpose_text",
            ),
            (
                pb::ConsentTerms {
                    need_areas: vec![99],
                    ..terms()
                },
                "terms.need_areas",
            ),
            (
                pb::ConsentTerms {
                    legal_basis: None,
                    ..terms()
                },
                "terms.legal_basis",
            ),
            (
                pb::ConsentTerms {
                    legal_basis: Some(pb::LegalBasis {
                        kind: pb::LegalBasisKind::Statute as i32,
                        statute: String::new(),
                    }),
                    ..terms()
                },
                "terms.legal_basis.statute",
            ),
            (
                pb::ConsentTerms {
                    valid_until: None,
                    ..terms()
                },
                "terms.valid_until",
            ),
            (
                pb::ConsentTerms {
                    valid_until: Some(to_timestamp(500)),
                    ..terms()
                },
                "terms.valid_until",
            ),
        ];
        for (t, field) in cases {
            assert_eq!(
                ConsentTerms::from_pb(t, 1_000_000).unwrap_err().field,
                field
            );
        }
    }

    #[test]
    fn purged_terms_keep_no_free_text_and_stay_valid() {
        let t = pb::ConsentTerms {
            purpose_text: "help near the client's flat".into(),
            legal_basis: Some(pb::LegalBasis {
                kind: pb::LegalBasisKind::Statute as i32,
                statute: "s. 12, the client's employer Acme".into(),
            }),
            ..Default::default()
        };
        let p =
            pb::ConsentTerms::decode(purged_terms(&t.encode_to_vec()).unwrap().as_slice()).unwrap();
        assert_eq!(p.purpose_text, PURGED_TEXT);
        let basis = p.legal_basis.unwrap();
        assert_eq!(basis.statute, PURGED_TEXT);
        assert_eq!(basis.kind, pb::LegalBasisKind::Statute as i32);
        let none = pb::ConsentTerms::default();
        let p = pb::ConsentTerms::decode(purged_terms(&none.encode_to_vec()).unwrap().as_slice())
            .unwrap();
        assert!(p.purpose_text.is_empty());
    }

    #[test]
    fn stored_terms_that_do_not_decode_are_an_error_not_empty_terms() {
        let garbage = [0xff, 0xff, 0xff, 0xff];
        assert!(purged_terms(&garbage).is_err());
        assert!(terms_end(&garbage).is_err());
        assert!(terms_from_stored(&garbage).is_err());
        // Terms without an end say so: none, not an error.
        let open = pb::ConsentTerms::default().encode_to_vec();
        assert_eq!(terms_end(&open).unwrap(), None);
    }
}
