//! Conversions between the protobuf wire types and the domain's: a value
//! from a caller, a peer or the database is checked as it becomes a domain
//! type (each error naming its field); a domain value becomes its wire form
//! for a reply, a message or a stored encoding. Below this room, nothing
//! names a wire type.

pub mod audit;
pub mod change;
pub mod checkpoint;
pub mod codes;
pub mod consent;
pub mod message;
pub mod org;
pub mod peer;
pub mod policy;
pub mod referral;
pub mod time;
