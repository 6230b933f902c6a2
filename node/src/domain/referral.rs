//! Referrals: the minimal case summary, outcomes, and who may set which state.

use super::codes::{
    AgeBand, DataCategory, DeclineReason, FailureReason, Gender, IdeologicalContext, Progress,
    ReferralState, RiskLevel, Setting,
};
use super::org::bounded_text;
use crate::error::FieldError;
use exitnet_proto::pb;

pub const MAX_NARRATIVE_CHARS: usize = 2000;
pub const MAX_NOTE_CHARS: usize = 500;
pub const MAX_LANGUAGES: usize = 8;

/// The minimal case summary, validated. Every field is optional; which ones
/// are present decides which data categories the consent must cover.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseSummary {
    pub age_band: Option<AgeBand>,
    pub gender: Option<Gender>,
    pub languages: Vec<String>,
    pub setting: Option<Setting>,
    pub ideological_context: Option<IdeologicalContext>,
    pub risk_level: Option<RiskLevel>,
    pub retaliation_risk: Option<RiskLevel>,
    pub security_note: String,
    pub needs_narrative: String,
}

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

    /// The data categories this summary carries, with the field names.
    pub fn categories(&self) -> Vec<(DataCategory, &'static str)> {
        let mut v = Vec::new();
        if self.age_band.is_some() {
            v.push((DataCategory::AgeBand, "summary.age_band"));
        }
        if self.gender.is_some() {
            v.push((DataCategory::Gender, "summary.gender"));
        }
        if !self.languages.is_empty() {
            v.push((DataCategory::Languages, "summary.languages"));
        }
        if self.setting.is_some() {
            v.push((DataCategory::Setting, "summary.setting"));
        }
        if self.ideological_context.is_some() {
            v.push((
                DataCategory::IdeologicalContext,
                "summary.ideological_context",
            ));
        }
        if self.risk_level.is_some() {
            v.push((DataCategory::RiskLevel, "summary.risk_level"));
        }
        if self.retaliation_risk.is_some() || !self.security_note.is_empty() {
            v.push((DataCategory::SecurityConsiderations, "summary.security"));
        }
        if !self.needs_narrative.is_empty() {
            v.push((DataCategory::NeedsNarrative, "summary.needs_narrative"));
        }
        v
    }
}

/// What the receiver reports on completion: progress on each of the four
/// outcomes of exit work (absent where not assessed) and a short note.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub disengagement: Option<Progress>,
    pub deradicalisation: Option<Progress>,
    pub reintegration: Option<Progress>,
    pub rehabilitation: Option<Progress>,
    pub service_delivered: bool,
    pub note: String,
}

/// A state change the receiving organisation makes, with what each one
/// carries: a reason where the vocabulary has one, a bounded text, the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Accept,
    Decline { reason: DeclineReason, text: String },
    Start,
    Hold { text: String },
    Complete { outcome: Outcome },
    Fail { reason: FailureReason, text: String },
}

impl Transition {
    /// The state it leads to.
    pub fn to(&self) -> ReferralState {
        match self {
            Transition::Accept => ReferralState::Accepted,
            Transition::Decline { .. } => ReferralState::Declined,
            Transition::Start => ReferralState::InProgress,
            Transition::Hold { .. } => ReferralState::OnHold,
            Transition::Complete { .. } => ReferralState::Completed,
            Transition::Fail { .. } => ReferralState::Failed,
        }
    }

    /// Its texts, checked: at most `MAX_NOTE_CHARS` each, named `text_field`
    /// and `outcome_field.note` as the caller names them.
    pub fn checked(self, text_field: &str, outcome_field: &str) -> Result<Self, FieldError> {
        match &self {
            Transition::Decline { text, .. }
            | Transition::Hold { text }
            | Transition::Fail { text, .. } => reason_text(text_field, text)?,
            Transition::Complete { outcome } => bounded_text(
                &format!("{outcome_field}.note"),
                &outcome.note,
                MAX_NOTE_CHARS,
            )?,
            Transition::Accept | Transition::Start => {}
        }
        Ok(self)
    }
}

/// A decline, failure or hold text.
pub fn reason_text(field: &str, s: &str) -> Result<(), FieldError> {
    bounded_text(field, s, MAX_NOTE_CHARS)
}

/// States the receiver may set from `from`.
pub fn receiver_may(from: ReferralState, to: ReferralState) -> bool {
    use ReferralState::*;
    matches!(
        (from, to),
        (Received, Accepted | Declined)
            | (Accepted, InProgress | OnHold | Completed | Failed)
            | (InProgress, OnHold | Completed | Failed)
            | (OnHold, InProgress | Completed | Failed)
    )
}

/// Whether the sender may still withdraw.
pub fn sender_may_withdraw(from: ReferralState) -> bool {
    use ReferralState::*;
    matches!(from, Requested | Received | Accepted | InProgress | OnHold)
}

/// A referral that has ended keeps only its tombstone once purged.
pub fn is_closed(s: ReferralState) -> bool {
    use ReferralState::*;
    matches!(s, Declined | Completed | Failed | Withdrawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closed_loop() {
        use ReferralState::*;
        assert!(receiver_may(Received, Accepted));
        assert!(receiver_may(Accepted, InProgress));
        assert!(receiver_may(InProgress, Completed));
        assert!(!receiver_may(Requested, Accepted));
        assert!(!receiver_may(Completed, InProgress));
        assert!(!receiver_may(Received, Completed));
        assert!(!receiver_may(Declined, Accepted));
        assert!(sender_may_withdraw(InProgress));
        assert!(!sender_may_withdraw(Completed));
    }

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
