//! `exitnetctl`: parses the command line and hands over to the library.

use clap::Parser;
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let opts = exitnetctl::opts::Opts::parse();
    let mut stdout = std::io::stdout().lock();
    let result = exitnetctl::run::run(opts, &mut stdout)
        .await
        .and_then(|()| stdout.flush().map_err(anyhow::Error::from));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`exitnetctl … | head`): nothing more to say.
        Err(e) if exitnetctl::run::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exitnetctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
