//! An Exitnet node: one organisation's server in the federated referral
//! network. `main.rs` only parses the command line; everything is here.
//!
//! - `domain`: validated types and rules, free of gRPC and SQL.
//! - `store`: the storage trait with SQLite and PostgreSQL backends.
//! - `identity`, `tls`: the node's key, and mutual TLS pinned to peers' keys.
//! - `peering`: invitations, joining, approval and the peer lifecycle.
//! - `api`, `federation`, `admin`: the three gRPC surfaces, thin adapters.
//! - `app`: builds the node, binds its listeners, runs until stopped.

pub mod access;
pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod batch_sign;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consents;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod error;
pub mod federation;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod init;
pub mod keydir;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod peering;
pub mod policy;
pub mod referrals;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod transport;

pub use app::Application;
pub use config::Config;
