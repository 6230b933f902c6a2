//! Referrals: the minimal case summary, outcomes, and who may set which state.

use super::codes::{
    AgeBand, DataCategory, DeclineReason, FailureReason, Gender, IdeologicalContext, Progress,
    ReferralState, RiskLevel, Setting,
};
use super::org::bounded_text;
use crate::error::FieldError;

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

impl Transition {
    /// What the history records of it beside the state.
    pub fn detail(&self) -> EventDetail {
        let mut d = EventDetail::default();
        match self {
            Transition::Accept | Transition::Start => {}
            Transition::Hold { text } => d.text = text.clone(),
            Transition::Decline { reason, text } => {
                d.decline_reason = Some(*reason);
                d.text = text.clone();
            }
            Transition::Fail { reason, text } => {
                d.failure_reason = Some(*reason);
                d.text = text.clone();
            }
            Transition::Complete { outcome } => d.outcome = Some(outcome.clone()),
        }
        d
    }
}

/// What an event of a referral's history says beyond its state: its reason
/// codes, which stay after a purge, and its content (a text, the outcome),
/// which a purge deletes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventDetail {
    pub decline_reason: Option<DeclineReason>,
    pub failure_reason: Option<FailureReason>,
    pub text: String,
    pub outcome: Option<Outcome>,
}

impl EventDetail {
    /// Whether it carries case content.
    pub fn has_content(&self) -> bool {
        !self.text.is_empty() || self.outcome.is_some()
    }

    /// Split into its codes and its content (`None` when it has none).
    pub fn split(mut self) -> (EventDetail, Option<EventDetail>) {
        let content = EventDetail {
            text: std::mem::take(&mut self.text),
            outcome: self.outcome.take(),
            ..Default::default()
        };
        let content = content.has_content().then_some(content);
        (self, content)
    }

    /// Its codes with `content`'s text and outcome put back.
    pub fn with_content(self, content: EventDetail) -> EventDetail {
        EventDetail {
            text: content.text,
            outcome: content.outcome,
            ..self
        }
    }

    /// The same as a reader who may not see case content is shown it: the
    /// texts go, the outcome's progress values stay.
    pub fn metadata_only(mut self) -> EventDetail {
        self.text.clear();
        if let Some(o) = &mut self.outcome {
            o.note.clear();
        }
        self
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
    fn a_detail_splits_into_codes_and_content() {
        let d = Transition::Decline {
            reason: DeclineReason::NoCapacity,
            text: "full until May".into(),
        }
        .detail();
        let (codes, content) = d.clone().split();
        assert_eq!(codes.decline_reason, Some(DeclineReason::NoCapacity));
        assert!(!codes.has_content());
        let content = content.expect("a text is content");
        assert_eq!(content.text, "full until May");
        assert_eq!(content.decline_reason, None);
        assert_eq!(codes.with_content(content), d);
        assert_eq!(Transition::Accept.detail().split().1, None);
        let done = Transition::Complete {
            outcome: Outcome {
                disengagement: Some(Progress::Some),
                note: "kept every appointment".into(),
                ..Default::default()
            },
        }
        .detail()
        .metadata_only();
        let o = done.outcome.expect("the outcome stays");
        assert_eq!(
            (o.disengagement, o.note.as_str()),
            (Some(Progress::Some), "")
        );
    }
}
