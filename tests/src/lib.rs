//! The test kit: starts real `exitnet-node` processes on port 0 with
//! temporary data directories, on SQLite or on a fresh PostgreSQL database
//! each, waits for them by polling, and drives them with `exitnetctl`.

pub mod db;
pub mod fixtures;
pub mod inproc;
pub mod node;
pub mod oidc;
pub mod peer;
pub mod proxy;

pub use db::{Backend, TestDatabase};
pub use node::{CtlOutput, NodeProcess, NodeSpec, bearer, binary, wait_until, with_token};
pub use proxy::{Fault, FaultProxy};
