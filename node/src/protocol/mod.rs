//! The federation protocol's messages, below the services that send and
//! receive them: building a notice for a peer, signing what goes out (one
//! signature per batch, `batch_sign`), opening and verifying what comes in,
//! the receipts both ways, and the signed invitation codes (`invitation`).
//! Knows keys, peers' pinned keys and the wire format; decides nothing about
//! referrals.

pub mod incoming;
pub mod invitation;
pub mod messages;
pub mod peer_client;
pub mod receipts;
pub mod rotation;
