//! The `exitnet-node` command line.

use crate::config::Config;
use crate::identity::Identity;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "exitnet-node",
    version,
    about = "An Exitnet node: consent-scoped referrals between organisations in exit work"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// `Init` carries its many flags; the command is parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a configuration file for a new organisation (asks, or takes flags).
    Init(crate::init::InitArgs),
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// TOML configuration file (also: EXITNET_CONFIG).
        #[arg(long, env = "EXITNET_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the organisation ID and the SHA-256 fingerprint of the node's key.
    Identity {
        #[arg(long, env = "EXITNET_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets redacted) and check
    /// everything `run` would refuse, without starting; exits 1 on any error.
    Check {
        #[arg(long, env = "EXITNET_CONFIG")]
        config: Option<PathBuf>,
        /// Also reach the database (read only) and the OpenID provider.
        #[arg(long)]
        connect: bool,
    },
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    let env: HashMap<String, String> = std::env::vars().collect();
    Config::load(config.map(|p| p.as_path()), &env)
}

/// Runs a parsed command; the exit code is the caller's to set.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => crate::init::run(args),
        Command::Run { config } => {
            // First: from here on SIGTERM stops the node gracefully.
            let stop = crate::app::shutdown_signal();
            let config = load(config.as_ref())?;
            let traces = crate::telemetry::init(config.log.format, &config.traces)?;
            let found = crate::config::check::offline(&config, crate::config::check::For::Run);
            for w in &found.warnings {
                tracing::warn!("{w}");
            }
            if !found.errors.is_empty() {
                return Err(crate::config::Problems(found.errors).into());
            }
            let app = crate::Application::build(config).await?;
            let ran = app.run_until_stopped(stop).await;
            // The exporter's last batch is sent from a thread of its own.
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
            ran
        }
        Command::Identity { config } => {
            let config = load(config.as_ref())?;
            crate::identity::create_private_dir(&config.data_dir)?;
            let store = match crate::store::open(&config.database_url()).await {
                Ok(s) => s,
                Err(e) => return Err(crate::config::check::database_error(&config, e).await),
            };
            let org_id = match (&config.org.id, store.meta_get("org_id").await?) {
                (_, Some(stored)) => stored,
                (Some(configured), None) => store.meta_init("org_id", configured).await?,
                (None, None) => anyhow::bail!(crate::config::check::missing_org_id()),
            };
            store.close().await;
            let data_dir = config.data_dir.clone();
            let id = org_id.clone();
            let identity =
                tokio::task::spawn_blocking(move || Identity::load_or_create(&data_dir, &id))
                    .await
                    .context("identity task")??;
            println!("organisation: {org_id}");
            println!("fingerprint:  {}", identity.current().fingerprint());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config, connect },
        } => {
            use crate::config::check;
            let config = load(config.as_ref())?;
            print!("{}", config.to_redacted_toml()?);
            let mut found = check::offline(&config, check::For::Check);
            if connect {
                found.extend(check::connect(&config).await);
            }
            for r in &found.reached {
                eprintln!("ok: {r}");
            }
            for w in &found.warnings {
                eprintln!("warning: {w}");
            }
            if found.errors.is_empty() {
                Ok(())
            } else {
                Err(crate::config::Problems(found.errors).into())
            }
        }
    }
}
