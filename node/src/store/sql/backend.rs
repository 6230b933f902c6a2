//! The shared SQL, compiled for one backend: the module that includes this
//! file names its store `S`, its database `Db` and its write transaction `Tx`.

use super::{Db, S, Tx};

mod audit;
mod consents;
mod keys;
mod leases;
mod meta;
mod outbox;
mod peers;
mod receipts;
mod referrals;
mod rows;
mod security;
mod shared;
