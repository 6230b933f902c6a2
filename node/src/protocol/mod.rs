//! The federation protocol's messages, below the services that send and
//! receive them: building a notice for a peer, signing what goes out (one
//! signature per batch, `batch_sign`), opening and verifying what comes in,
//! and the receipts both ways. Knows keys, peers' pinned keys and the wire
//! format; decides nothing about referrals.

pub mod messages;
pub mod receipts;
