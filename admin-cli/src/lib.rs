//! `exitnetctl`: the administrator's command line. Options are declared in
//! `opts`, carried out in `run`; `client` is the typed admin-socket client
//! that the test kit uses too.

pub mod audit;
pub mod cases;
pub mod client;
pub mod login;
pub mod opts;
mod output;
pub mod run;
