//! `exitnetctl`: the administrator's command line. Options are declared in
//! `opts`, carried out in `run`; `client` is the typed admin-socket client
//! that the test kit uses too.

pub mod audit;
pub mod cases;
pub mod client;
pub mod codes;
pub mod login;
pub mod opts;
pub mod output;
pub mod report;
pub mod run;
