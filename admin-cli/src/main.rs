//! `exitnetctl`: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let opts = exitnetctl::opts::Opts::parse();
    let mut stdout = std::io::stdout().lock();
    match exitnetctl::run::run(opts, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exitnetctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
