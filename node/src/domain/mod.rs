//! Validated domain types. A value of these types is valid by construction;
//! wire types are converted at the edge (`convert`).

mod codes;
pub mod consent;
pub mod org;
mod peer;
pub mod time;

pub use codes::{
    CollectionMethod, DataCategory, LegalBasisKind, NeedArea, Purpose, Restriction, Sector,
    Service, Setting,
};
pub use org::{OrgId, OrgProfile, bounded_text, endpoint_check, org_name_check};
pub use peer::{Awaiting, Peer, PeerAction, PeerState};
