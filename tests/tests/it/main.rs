//! The one integration-test binary of the workspace (each extra binary is
//! another link step), one module per subject; fixtures are in the test
//! kit (`exitnet_tests::fixtures`, `exitnet_tests::inproc` for nodes in this
//! process). Among them:
//! - `store`: the storage suite, run against SQLite and PostgreSQL;
//! - `node`: a single node's life: start, health, reflection, restart, stop, configuration;
//! - `peering`: several nodes driven through `exitnetctl`, invitations on moved clocks;
//! - `closed_loop`, `receiver_checks`, `durability`, `policy`, `watch`: referrals
//!   across real nodes, by subject;
//! - `traces`: span export to an OpenTelemetry collector.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod auth;
mod cli;
mod closed_loop;
mod config;
mod consents;
mod crashes;
mod demo;
mod durability;
mod faults;
mod hijack;
mod limits;
mod linking;
mod node;
mod ops;
mod peering;
mod policy;
mod purge;
mod quotas;
mod receiver_checks;
mod repeats;
mod replicas;
mod restore;
mod shredding;
mod store;
mod traces;
mod upgrade;
mod watch;
mod withdrawals;
