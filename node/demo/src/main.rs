//! `exitnet-demo`: three organisations on loopback play one client's case end
//! to end (the library, `exitnet_demo`, tells the story).

use clap::Parser;

/// Three Exitnet organisations on loopback play one client's case end to end.
#[derive(Debug, Parser)]
#[command(name = "exitnet-demo", version)]
struct Cli {
    /// Leave the three nodes running afterwards, for exitnetctl.
    #[arg(long)]
    keep_running: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The story on stdout; in the log only errors (dev sign-in is expected
    // here), unless RUST_LOG asks for more.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match exitnet_demo::run(cli.keep_running).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exitnet-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
