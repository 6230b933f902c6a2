//! Consent records: what the client agreed to, validated at the edge.

use super::codes::{
    CollectionMethod, DataCategory, LegalBasisKind, NeedArea, Purpose, Restriction,
};
use super::org::{OrgId, bounded_text};
use crate::error::FieldError;

pub const MAX_RECIPIENTS: usize = 20;
pub const MAX_SUBJECT_REF_CHARS: usize = 100;
/// Consents further in the future or the past than this are mistakes.
pub(crate) const MAX_SPAN_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// The terms of a consent, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentTerms {
    pub recipients: Vec<OrgId>,
    pub purposes: Vec<Purpose>,
    pub purpose_text: String,
    pub data_categories: Vec<DataCategory>,
    pub need_areas: Vec<NeedArea>,
    pub legal_basis: LegalBasisKind,
    pub statute: String,
    pub restrictions: Vec<Restriction>,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
}

impl ConsentTerms {
    /// The terms one recipient receives: only that recipient, codes only (no
    /// `purpose_text`, no `statute`: free text is where a client is named,
    /// and the same text at two recipients links their records), and both
    /// times rounded down to 00:00 UTC, so two recipients' copies share
    /// nothing but code-list values and dates. Rounding `valid_until` down
    /// means a recipient never holds data past the consent's end; the
    /// sender sends only while these coarse terms are in force
    /// (`in_force`), so a recipient never sees terms that look expired.
    /// Rounding `valid_from` down claims nothing new: the sender has checked
    /// the real start before sending.
    pub fn for_recipient(&self, recipient: &OrgId) -> Self {
        Self {
            recipients: vec![recipient.clone()],
            purposes: self.purposes.clone(),
            purpose_text: String::new(),
            data_categories: self.data_categories.clone(),
            need_areas: self.need_areas.clone(),
            legal_basis: self.legal_basis,
            statute: String::new(),
            restrictions: self.restrictions.clone(),
            valid_from_ms: floor_to_day(self.valid_from_ms),
            valid_until_ms: floor_to_day(self.valid_until_ms),
        }
    }

    /// Whether the terms allow sharing at `now_ms` (withdrawal is checked apart).
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.valid_from_ms <= now_ms && now_ms < self.valid_until_ms
    }

    /// Whether a referral to `recipient` with these need areas, services and
    /// summary is within the terms at `now_ms`: the one scope check, made by
    /// the sender against its consent and by the receiver against the terms
    /// that came with the offer. The first thing outside, if any.
    pub fn scope(
        &self,
        recipient: &OrgId,
        need_areas: &[NeedArea],
        services: &[super::Service],
        summary: &super::referral::CaseSummary,
        now_ms: i64,
    ) -> Result<(), OutOfScope> {
        if !self.in_force(now_ms) {
            return Err(OutOfScope::NotInForce);
        }
        if !self.recipients.contains(recipient) {
            return Err(OutOfScope::NotARecipient);
        }
        if let Some(a) = need_areas.iter().find(|a| !self.need_areas.contains(a)) {
            return Err(OutOfScope::NeedArea(*a));
        }
        if let Some(s) = services
            .iter()
            .find(|s| !self.need_areas.contains(&s.need_area()))
        {
            return Err(OutOfScope::Service(*s));
        }
        if let Some((category, field)) = summary
            .categories()
            .into_iter()
            .find(|(c, _)| !self.data_categories.contains(c))
        {
            return Err(OutOfScope::Category { category, field });
        }
        Ok(())
    }
}

/// What of a referral falls outside a consent's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfScope {
    /// Expired, or not yet valid.
    NotInForce,
    NotARecipient,
    NeedArea(NeedArea),
    /// A service of a need area the terms do not cover.
    Service(super::Service),
    /// A summary field (`field`) of a category the terms do not cover.
    Category {
        category: DataCategory,
        field: &'static str,
    },
}

impl OutOfScope {
    /// The refusal of what the referral carries, its field under `prefix`
    /// (`""` for the client API, `"offer."` for a peer's offer); `None` for
    /// the terms themselves (not in force, not a recipient), which each side
    /// words for its caller.
    pub fn content_refusal(&self, prefix: &str) -> Option<String> {
        match self {
            OutOfScope::NotInForce | OutOfScope::NotARecipient => None,
            OutOfScope::NeedArea(a) => {
                Some(format!("{prefix}need_areas: {a} is outside the consent"))
            }
            OutOfScope::Service(s) => Some(format!(
                "{prefix}services: {s} is outside the consent's need areas"
            )),
            OutOfScope::Category { category, field } => Some(format!(
                "{prefix}{field}: the consent does not cover {category}"
            )),
        }
    }
}

/// One day, in milliseconds.
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// `ms` rounded down to 00:00 UTC of its day.
pub fn floor_to_day(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

/// What a consent withdrawn or ended keeps instead of its client reference:
/// this prefix (a control character, which no reference can hold) and a
/// keyed digest of the reference (`referrals::Pseudonyms::forgotten_ref`), so
/// subject access still finds it while the reference itself is gone.
pub const FORGOTTEN_PREFIX: &str = "\u{1}forgotten:";

/// The client's own reference: bounded, printable.
pub fn subject_ref(field: &str, s: &str) -> Result<String, FieldError> {
    if s.trim().is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    bounded_text(field, s, MAX_SUBJECT_REF_CHARS)?;
    Ok(s.to_owned())
}

/// A recorded consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub consent_id: String,
    pub subject_ref: String,
    pub terms: ConsentTerms,
    pub collection_method: CollectionMethod,
    pub witness: String,
    /// The case manager the consent belongs to (the acting subject).
    pub owner: String,
    pub team: Option<String>,
    /// Who recorded it: the owner, or `system (for owner)`.
    pub recorded_by: String,
    pub recorded_at_ms: i64,
    pub withdrawn_at_ms: Option<i64>,
}
