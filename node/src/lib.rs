//! An Exitnet node: one organisation's server in the federated referral
//! network. `main.rs` only parses the command line; everything is here.
//!
//! From the bottom up (docs/architecture.md draws it; `scripts/module-cycles`
//! checks that no circle between these modules grows):
//!
//! - `domain`: validated types and rules, free of SQL.
//! - `store`: the storage trait with SQLite and PostgreSQL backends, and
//!   `store::intake`, which stores writes that arrive at once together.
//! - `identity`, `tls`, `transport`: the node's key, mutual TLS pinned to
//!   peers' keys, and the channels and closable connections between nodes.
//! - `clock`, `limits`, `metrics`, `auth`, `access`, `policy`, `batch_sign`:
//!   given what they need, naming no service.
//! - `state`: what the services share, built in `app`, holding values of the
//!   modules above only.
//! - `consents`, `referrals`, `peering` (with delivery, `peering::outbox`),
//!   `audit`: the services.
//! - `api`, `federation`, `admin`: the three gRPC surfaces, thin adapters;
//!   `subject_access`: a report across the services.
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
pub mod subject_access;
pub mod telemetry;
pub mod tls;
pub mod transport;

pub use app::Application;
pub use config::Config;
