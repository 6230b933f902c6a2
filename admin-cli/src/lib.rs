//! `exitnetctl`: the administrator's command line. Options are declared in
//! `opts`, carried out in `run` over the typed admin-socket client
//! (`exitnet-client`, which the test kit uses too); `client` also reaches
//! the client API.

pub mod audit;
pub mod cases;
pub mod client;
pub mod codes;
pub mod login;
pub mod opts;
pub mod output;
pub mod report;
pub mod run;
