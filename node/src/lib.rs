//! An Exitnet node: one organisation's server in the federated referral
//! network. `main.rs` only parses the command line; everything is here.
//!
//! From the bottom up (docs/architecture.md draws it; `scripts/module-cycles
//! --max 0` fails on any import circle between these modules):
//!
//! - `domain`, `error`, `crypto`, `clock`: values and rules, free of SQL and
//!   of wire types.
//! - `wire`: protobuf to domain values, checked, and back.
//! - `store`: a storage trait per aggregate with SQLite and PostgreSQL
//!   backends, and `store::intake`, which stores writes that arrive at once
//!   together.
//! - `identity`, `tls`, `keydir`, `transport`: the node's keys,
//!   mutual TLS pinned to peers' keys, channels and closable connections,
//!   and (`transport::status`) the one mapping of errors to gRPC statuses.
//! - `config`, `auth`, `access`, `policy`, `limits`, `metrics`: given what
//!   they need, naming no service.
//! - `signals`: which referrals changed, and that notices wait to be sent.
//! - `protocol`, `delivery`: the federation messages, checkpoints and
//!   receipts, signed (one signature per batch, `protocol::batch_sign`) and
//!   verified (the `Protocol` service), and their delivery to each peer (`Delivery`),
//!   which hands what peers answer to `delivery::Answers` (implemented above
//!   the services, in `answers`).
//! - `audit`, `security`, `peering`, `referrals`, `consents`, `directory`:
//!   the services, each a struct holding what it uses, each using only
//!   those before it.
//! - `witness`, `answers`, `subject_access`, `keys`: above the services.
//! - `api`, `federation`, `admin`: the three gRPC surfaces, thin adapters
//!   holding the services they call (`api::requests` reads requests into
//!   the services' inputs, `api::views` shows what they return).
//! - `app`, `cli`, `init`: the composition root (`app::Node`, the node's
//!   parts; `app::Services`, every service built once), the listeners, the
//!   run until stopped.
//!
//! The demo (`exitnet-demo`, `node/demo`) and the fuzz targets
//! (`node/fuzzing`) are crates of their own, outside this library.

pub mod access;
pub mod admin;
pub mod answers;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consents;
pub mod crypto;
pub mod delivery;
pub mod directory;
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
pub mod protocol;
pub mod referrals;
pub mod security;
pub mod signals;

pub mod store;
pub mod subject_access;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod wire;
pub mod witness;

pub use app::Application;
pub use config::Config;
