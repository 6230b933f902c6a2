//! `exitnet-node`: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = exitnet_node::cli::Cli::parse();
    match exitnet_node::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming what is wrong; secrets never reach error text.
            eprintln!("exitnet-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
