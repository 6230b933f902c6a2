//! The audit trail witnessed by peers: checkpoints of our chain's head sent
//! to every active peer and countersigned (`checkpoint`), theirs kept and
//! countersigned by us, and the verification of our chain against what the
//! peers witnessed (`verify`). Above the audit trail and peering, which it
//! uses; the delivery of checkpoints is `delivery`'s.

pub mod checkpoint;
pub mod verify;
