//! The case summary on the wire.

use crate::domain::org::bounded_text;
use crate::domain::referral::*;
use crate::domain::*;
use crate::error::FieldError;
use exitnet_proto::pb;
use prost::Message;

impl CaseSummary {
    pub fn from_pb(field: &str, s: pb::CaseSummary) -> Result<Self, FieldError> {
        let f = |name: &str| format!("{field}.{name}");
        let pb::CaseSummary {
            age_band,
            gender,
            languages,
            setting,
            ideological_context,
            risk_level,
            security,
            needs_narrative,
            contact_route,
        } = s;
        if languages.len() > MAX_LANGUAGES {
            return Err(FieldError::new(
                f("languages"),
                format!("at most {MAX_LANGUAGES}"),
            ));
        }
        for l in &languages {
            if l.is_empty()
                || l.len() > 35
                || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(FieldError::new(
                    f("languages"),
                    "must be BCP 47 language tags",
                ));
            }
        }
        // Contact always runs through the referring case manager.
        match pb::ContactRoute::try_from(contact_route) {
            Ok(pb::ContactRoute::Unspecified | pb::ContactRoute::ReferringCaseManager) => {}
            _ => {
                return Err(FieldError::new(
                    f("contact_route"),
                    "must be REFERRING_CASE_MANAGER",
                ));
            }
        }
        let security = security.unwrap_or_default();
        bounded_text(&f("security.note"), &security.note, MAX_NOTE_CHARS)?;
        if needs_narrative.chars().count() > MAX_NARRATIVE_CHARS {
            return Err(FieldError::new(
                f("needs_narrative"),
                format!("at most {MAX_NARRATIVE_CHARS} characters"),
            ));
        }
        if needs_narrative.chars().any(|c| c.is_control() && c != '\n') {
            return Err(FieldError::new(
                f("needs_narrative"),
                "control characters are not allowed",
            ));
        }
        Ok(Self {
            age_band: AgeBand::from_pb_optional(&f("age_band"), age_band)?,
            gender: Gender::from_pb_optional(&f("gender"), gender)?,
            languages,
            setting: Setting::from_pb_optional(&f("setting"), setting)?,
            ideological_context: IdeologicalContext::from_pb_optional(
                &f("ideological_context"),
                ideological_context,
            )?,
            risk_level: RiskLevel::from_pb_optional(&f("risk_level"), risk_level)?,
            retaliation_risk: RiskLevel::from_pb_optional(
                &f("security.retaliation_risk"),
                security.retaliation_risk,
            )?,
            security_note: security.note,
            needs_narrative,
        })
    }

    pub fn to_pb(&self) -> pb::CaseSummary {
        let security =
            (self.retaliation_risk.is_some() || !self.security_note.is_empty()).then(|| {
                pb::SecurityConsiderations {
                    retaliation_risk: self.retaliation_risk.map(RiskLevel::to_pb).unwrap_or(0),
                    note: self.security_note.clone(),
                }
            });
        pb::CaseSummary {
            age_band: self.age_band.map(AgeBand::to_pb).unwrap_or(0),
            gender: self.gender.map(Gender::to_pb).unwrap_or(0),
            languages: self.languages.clone(),
            setting: self.setting.map(Setting::to_pb).unwrap_or(0),
            ideological_context: self
                .ideological_context
                .map(IdeologicalContext::to_pb)
                .unwrap_or(0),
            risk_level: self.risk_level.map(RiskLevel::to_pb).unwrap_or(0),
            security,
            needs_narrative: self.needs_narrative.clone(),
            contact_route: pb::ContactRoute::ReferringCaseManager as i32,
        }
    }
}

/// A summary as this node keeps it, before it is sealed.
pub fn summary_to_stored(s: &CaseSummary) -> Vec<u8> {
    s.to_pb().encode_to_vec()
}

/// A summary as this node keeps it (sealed; this is the opened encoding):
/// `None` if it no longer reads as a valid summary.
pub fn summary_from_stored(plain: &[u8]) -> Option<CaseSummary> {
    let s = pb::CaseSummary::decode(plain).ok()?;
    CaseSummary::from_pb("summary", s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_bounds_and_categories() {
        let s = CaseSummary::from_pb(
            "summary",
            pb::CaseSummary {
                age_band: pb::AgeBand::AgeBand1824 as i32,
                needs_narrative: "Needs trauma therapy.".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let cats: Vec<DataCategory> = s.categories().into_iter().map(|c| c.0).collect();
        assert_eq!(cats, [DataCategory::AgeBand, DataCategory::NeedsNarrative]);
        let e = CaseSummary::from_pb(
            "summary",
            pb::CaseSummary {
                needs_narrative: "x".repeat(2001),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "summary.needs_narrative");
        let e = CaseSummary::from_pb(
            "summary",
            pb::CaseSummary {
                contact_route: 7,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "summary.contact_route");
        let e = CaseSummary::from_pb(
            "summary",
            pb::CaseSummary {
                risk_level: 99,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "summary.risk_level");
    }
}
