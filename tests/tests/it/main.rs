//! The one integration-test binary of the workspace (each extra binary is
//! another link step). Modules:
//! - `store`: the storage suite, run against SQLite and PostgreSQL;
//! - `node`: a single node's life: start, health, reflection, restart, stop, configuration;
//! - `peering`: several nodes driven through `exitnetctl`;
//! - `traces`: span export to an OpenTelemetry collector.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod auth;
mod cli;
mod config;
mod consents;
mod crashes;
mod demo;
mod faults;
mod hijack;
mod limits;
mod linking;
mod node;
mod ops;
mod peering;
mod purge;
mod quotas;
mod referrals;
mod repeats;
mod replicas;
mod restore;
mod shredding;
mod store;
mod traces;
mod upgrade;
mod withdrawals;
