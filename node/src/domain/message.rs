//! What a referral message between two nodes says, in the domain's terms.
//! `protocol::messages` signs it as a `FederationMessage`; `wire::message`
//! reads a received one back, checked, before any rule of this node sees it.

use super::consent::ConsentTerms;
use super::referral::{CaseSummary, Transition};
use super::{NeedArea, Service, Urgency, WithdrawalCause};

/// A referral offered to a peer: the minimal summary and the terms it
/// travels under, for the recipient to check again.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub referral_id: String,
    /// The pseudonym the sender derived for this recipient (32 hex).
    pub subject_pseudonym: String,
    pub need_areas: Vec<NeedArea>,
    pub services: Vec<Service>,
    pub urgency: Urgency,
    pub summary: CaseSummary,
    pub terms: ConsentTerms,
    /// The sender's reference to the consent, opaque to the recipient.
    pub consent_ref: String,
}

/// One message about a referral.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferralMessage {
    Offer(Box<Offer>),
    /// The receiver's state change, made at `at_ms`.
    Status {
        referral_id: String,
        transition: Transition,
        at_ms: i64,
    },
    /// The sender withdraws: the receiver purges what it holds, whatever
    /// the cause (one it does not know too).
    Withdrawal {
        referral_id: String,
        cause: Option<WithdrawalCause>,
    },
}
