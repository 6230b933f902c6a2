//! Refused calls on record (`refusals`) and the quotas on what an approved
//! peer can make us store (`quotas`): used by the adapters, peering, the
//! receiver of referrals and the witness alike.

mod quotas;
mod refusals;

pub use quotas::Quotas;
pub use refusals::Refusals;
