//! Command-line options (clap). Execution lives in `run`.

use crate::codes::{self, one_of};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod cases;

pub use cases::*;

#[derive(Debug, Parser)]
#[command(
    name = "exitnetctl",
    version,
    about = "Administer an Exitnet node over its local admin socket, and act on its client API",
    after_help = "Examples:\n  exitnetctl --socket /var/lib/exitnet/admin.sock peer list\n  exitnetctl --wait 30 identity show\n  exitnetctl referral create --help"
)]
pub struct Opts {
    /// The node's admin socket.
    #[arg(
        long,
        global = true,
        env = "EXITNET_ADMIN_SOCKET",
        default_value = "./exitnet-data/admin.sock"
    )]
    pub socket: PathBuf,
    /// Output for people (table) or for scripts (json). `show` commands print
    /// one JSON object, `list` commands a JSON array. Default: table (the
    /// exports: JSON lines).
    #[arg(long, short = 'o', global = true, value_enum, env = "EXITNET_OUTPUT")]
    pub output: Option<Output>,
    /// Wait up to SECS for the node to be ready (its admin socket, or the
    /// client API address, accepting connections) instead of failing at once.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// This node's identity and key.
    #[command(after_help = "Examples:\n  exitnetctl identity show\n  exitnetctl identity rotate")]
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Peers: invitations, joining, approval and the lifecycle.
    #[command(
        after_help = "Examples:\n  exitnetctl peer invite --expires 2h\n  exitnetctl peer join exitnet-invite-v1.…\n  exitnetctl peer list"
    )]
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Refused calls recorded by the node (who, when, why).
    #[command(after_help = "Example:\n  exitnetctl security events --limit 20")]
    Security {
        #[command(subcommand)]
        command: SecurityCommand,
    },
    /// The audit trail: verify it, export it, answer a subject access request.
    #[command(
        after_help = "Examples:\n  exitnetctl audit verify\n  exitnetctl audit export --since 2026-11-01T00:00:00Z > audit.jsonl\n  exitnetctl audit subject client-17 --format markdown"
    )]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Signed delivery and purge receipts: export them, verify one.
    #[command(
        after_help = "Example:\n  exitnetctl receipt export 0193… > receipts.jsonl && exitnetctl receipt verify receipts.jsonl"
    )]
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// For the data protection officer: what was shared with whom, and purges.
    #[command(
        after_help = "Examples:\n  exitnetctl report shared --peer prison-b --from 2026-01-01 --to 2026-06-30\n  exitnetctl report purges"
    )]
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Mint a client-API token (only when the node runs with auth.mode = "dev").
    #[command(
        after_help = "Example:\n  TOKEN=$(exitnetctl dev-token --role case_manager --subject alice)"
    )]
    DevToken {
        /// The role the token carries.
        #[arg(long, value_parser = one_of(codes::ROLES))]
        role: String,
        /// Whom the token names (its `sub`): the person or system.
        #[arg(long)]
        subject: String,
        /// The team, when the node uses teams.
        #[arg(long, default_value = "")]
        team: String,
    },
    /// Sign in to the organisation's identity provider (OAuth 2.0 device flow).
    #[command(
        after_help = "Example:\n  exitnetctl login --issuer https://login.example.org/realms/exit --client-id exitnetctl"
    )]
    Login {
        /// The provider's issuer URL.
        #[arg(long, env = "EXITNET_CTL_ISSUER")]
        issuer: String,
        /// The provider's client ID for exitnetctl.
        #[arg(long, env = "EXITNET_CTL_CLIENT_ID", default_value = "exitnetctl")]
        client_id: String,
    },
    /// Forget the stored sign-in.
    #[command(after_help = "Example:\n  exitnetctl logout")]
    Logout,
    /// Calls on the node's client API, as the signed-in user.
    #[command(
        after_help = "Examples:\n  exitnetctl api info --api 127.0.0.1:7711\n  exitnetctl api peers --service trauma_ptsd"
    )]
    Api {
        #[command(flatten)]
        target: ApiTarget,
        #[command(subcommand)]
        command: ApiCommand,
    },
    /// Consent records on the client API, as the signed-in case manager.
    #[command(
        after_help = "Example:\n  exitnetctl consent record --subject client-17 --recipient prison-b --need-area functional_reintegration --field age_band"
    )]
    Consent {
        #[command(flatten)]
        target: ApiTarget,
        #[command(subcommand)]
        command: ConsentCommand,
    },
    /// Referrals on the client API, as the signed-in case manager.
    #[command(
        after_help = "Examples:\n  exitnetctl referral list --inbound\n  exitnetctl referral show 0193…\n  exitnetctl referral create --help"
    )]
    Referral {
        #[command(flatten)]
        target: ApiTarget,
        #[command(subcommand)]
        command: ReferralCommand,
    },
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  exitnetctl completions bash > /etc/bash_completion.d/exitnetctl"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the client API is and how to sign in to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiTarget {
    /// The client API address, HOST:PORT. Plaintext only on loopback;
    /// anywhere else exitnetctl speaks TLS (give --ca) and never sends a
    /// token in plaintext.
    #[arg(
        long,
        global = true,
        env = "EXITNET_CTL_API",
        default_value = "127.0.0.1:7711"
    )]
    pub api: String,
    /// PEM file of the CA that signed the client API's certificate: the
    /// connection uses TLS and checks the certificate against it (required
    /// for an address that is not on loopback).
    #[arg(long, global = true, env = "EXITNET_CTL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM certificate to present to a client API that asks agency systems
    /// for one (api.tls.client_ca_file); with --key and --ca.
    #[arg(
        long,
        global = true,
        env = "EXITNET_CTL_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(
        long,
        global = true,
        env = "EXITNET_CTL_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// A bearer token to use instead of the stored sign-in.
    #[arg(long, global = true, env = "EXITNET_CTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an agency system: the case manager the call is made for.
    #[arg(long, global = true)]
    pub on_behalf_of: Option<String>,
}

impl Default for ApiTarget {
    fn default() -> Self {
        Self {
            api: "127.0.0.1:7711".into(),
            ca: None,
            cert: None,
            key: None,
            token: None,
            on_behalf_of: None,
        }
    }
}

pub const REFERRAL_STATES: &[&str] = &[
    "requested",
    "received",
    "accepted",
    "declined",
    "in_progress",
    "on_hold",
    "completed",
    "failed",
    "withdrawn",
];

#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// The node's organisation, protocol version and key fingerprint.
    #[command(after_help = "Example:\n  exitnetctl api info")]
    Info,
    /// Active peers from the directory, optionally by need area or service.
    #[command(after_help = "Example:\n  exitnetctl api peers --need-area mental_health")]
    Peers {
        /// Only peers working in this need area.
        #[arg(long, value_parser = one_of(codes::NEED_AREAS))]
        need_area: Option<String>,
        /// Only peers offering this service.
        #[arg(long, value_parser = one_of(codes::SERVICES))]
        service: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Organisation, key fingerprint and federation endpoint.
    #[command(after_help = "Example:\n  exitnetctl identity show")]
    Show,
    /// Make a new key; peers are told and accept the old one for the overlap.
    /// The verification codes of every peering change with it.
    #[command(after_help = "Example:\n  exitnetctl identity rotate")]
    Rotate,
    /// Make a new master-key generation now and rewrap every data key under it
    /// (the node also does so every keys.rotation_days). The generation it
    /// replaces is destroyed keys.backup_retention_days from now.
    #[command(after_help = "Example:\n  exitnetctl identity rotate-master-key")]
    RotateMasterKey,
}

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Create a single-use invitation code to give another administrator.
    #[command(
        after_help = "Example:\n  exitnetctl peer invite --expires 2h --note \"probation east\" > code.txt\n\nAlso the way to peer again after a revoke: the new join replaces the revoked record."
    )]
    Invite {
        /// Lifetime, e.g. 30m, 24h, 7d; at most 30d.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expires: u64,
        /// Federation endpoint (host:port) to put in the code.
        #[arg(long)]
        endpoint: Option<String>,
        /// A note for your own records (not in the code).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Join the node that issued CODE (`-`: read it from standard input); this is
    /// your approval of the peering.
    #[command(
        after_help = "Example:\n  exitnetctl peer join - < code.txt\n\nAfter a revoke (by either side) a new invitation and join peer the two again."
    )]
    Join { code: String },
    /// All peers with their states and verification codes (always a table, or a JSON array).
    #[command(after_help = "Example:\n  exitnetctl peer list")]
    List,
    /// One peer in full, with the verification code to read aloud.
    #[command(after_help = "Example:\n  exitnetctl peer show prison-b")]
    Show { org: String },
    /// Approve a pending join request.
    #[command(after_help = "Example:\n  exitnetctl peer approve prison-b")]
    Approve { org: String },
    /// Refuse a pending join request.
    #[command(after_help = "Example:\n  exitnetctl peer reject prison-b")]
    Reject { org: String },
    /// Pause the peering; every new call in both directions is refused.
    #[command(after_help = "Example:\n  exitnetctl peer suspend prison-b")]
    Suspend { org: String },
    /// Resume a suspended peering.
    #[command(after_help = "Example:\n  exitnetctl peer resume prison-b")]
    Resume { org: String },
    /// End the peering; it cannot be resumed, only replaced by a new invitation (asks first; --yes for scripts).
    #[command(
        after_help = "Example:\n  exitnetctl peer revoke prison-b --yes\n\nReferral messages to the peer stop (offers not yet delivered fail as undeliverable\nafter federation.max_delivery_age_secs), except withdrawals: they are still delivered\nuntil the peer's purge receipts come or `exitnetctl peer abandon-purges`. To peer\nagain later: `exitnetctl peer invite` and the other side's `peer join`."
    )]
    Revoke {
        org: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Give up the purges still pending at a revoked peer: its withdrawals are no longer delivered (asks first; --yes for scripts). Recorded in the audit trail.
    #[command(
        after_help = "Example:\n  exitnetctl peer abandon-purges prison-b --yes\n\nOnly once the peering has ended (`peer revoke`): until then, and after a revoke until\nthis command, withdrawals keep being delivered while the peer's key is pinned. The\nreferrals' purge status becomes `abandoned` (`exitnetctl report purges`)."
    )]
    AbandonPurges {
        org: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Show or change what may be sent to and accepted from a peer.
    #[command(
        after_help = "Examples:\n  exitnetctl peer policy prison-b\n  exitnetctl peer policy prison-b --need-areas functional_reintegration,security --allow-narrative"
    )]
    Policy {
        org: String,
        /// Need areas allowed (comma-separated).
        #[arg(long, alias = "need-area", value_delimiter = ',', value_parser = one_of(codes::NEED_AREAS))]
        need_areas: Option<Vec<String>>,
        /// Summary fields allowed (comma-separated).
        #[arg(long, alias = "field", value_delimiter = ',', value_parser = one_of(codes::DATA_CATEGORIES))]
        fields: Option<Vec<String>>,
        /// Purposes allowed (comma-separated).
        #[arg(long, alias = "purpose", value_delimiter = ',', value_parser = one_of(codes::PURPOSES))]
        purposes: Option<Vec<String>>,
        /// Purge closed referrals at the peer this many days after they close (0: never).
        #[arg(long)]
        retention_days: Option<u32>,
        /// Add the free-text needs narrative to the allowed fields.
        #[arg(long, conflicts_with = "deny_narrative")]
        allow_narrative: bool,
        /// Remove the needs narrative from the allowed fields.
        #[arg(long)]
        deny_narrative: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// The most recent refused calls, newest first (always a table, or a JSON array).
    #[command(after_help = "Example:\n  exitnetctl security events --limit 20 -o json")]
    Events {
        /// At most this many (up to 10000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubjectFormat {
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain, the checkpoints and what peers witnessed; exits
    /// non-zero naming the first record that fails.
    #[command(after_help = "Example:\n  exitnetctl audit verify --local-only")]
    Verify {
        /// Do not ask peers for the checkpoints they witnessed.
        #[arg(long)]
        local_only: bool,
    },
    /// Write the trail as JSON lines, oldest first (`-o table`: a table).
    #[command(
        after_help = "Example:\n  exitnetctl audit export --since 2026-11-01T00:00:00Z --action referral.create > audit.jsonl"
    )]
    Export {
        /// Only records at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<time::OffsetDateTime>,
        /// Only records before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<time::OffsetDateTime>,
        /// Only records of this actor.
        #[arg(long)]
        actor: Option<String>,
        /// Only records of this action, e.g. referral.create.
        #[arg(long)]
        action: Option<String>,
        /// Only records about this object (a referral, consent or peer).
        #[arg(long)]
        object_id: Option<String>,
    },
    /// Everything this node holds and has shared about one client (GDPR Art. 15),
    /// as JSON or as a Markdown report to hand over.
    #[command(
        after_help = "Examples:\n  exitnetctl audit subject client-17 > client-17.json\n  exitnetctl audit subject client-17 --format markdown > client-17.md"
    )]
    Subject {
        /// The client's local reference (or the pseudonym a peer used).
        local_ref: String,
        /// json (the default) or markdown (a report for the person).
        #[arg(long, value_enum, default_value = "json")]
        format: SubjectFormat,
    },
    /// Sign a checkpoint of the chain now and send it to the peers to witness.
    #[command(after_help = "Example:\n  exitnetctl audit checkpoint")]
    Checkpoint,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// The signed receipts kept for a referral, as JSON lines (one per receipt).
    #[command(after_help = "Example:\n  exitnetctl receipt export 0193… > receipts.jsonl")]
    Export { referral_id: String },
    /// Check receipts exported from a node (a file of JSON lines) against the
    /// issuer's pinned key; exits non-zero if any does not verify.
    #[command(after_help = "Example:\n  exitnetctl receipt verify receipts.jsonl")]
    Verify { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// What was shared with whom: per peer, how many referrals, which data
    /// categories and purposes, under which legal bases (no client content).
    #[command(
        after_help = "Example:\n  exitnetctl report shared --peer prison-b --from 2026-01-01 --to 2026-03-31"
    )]
    Shared {
        /// Only what was shared with this organisation.
        #[arg(long)]
        peer: Option<String>,
        /// From this day (YYYY-MM-DD, UTC) or time (RFC 3339), inclusive.
        #[arg(long, value_parser = parse_day_or_time)]
        from: Option<time::OffsetDateTime>,
        /// Up to this day (inclusive) or time (exclusive).
        #[arg(long, value_parser = parse_day_end_or_time)]
        to: Option<time::OffsetDateTime>,
    },
    /// Withdrawals and their purge status per recipient, oldest pending first.
    #[command(after_help = "Example:\n  exitnetctl report purges")]
    Purges,
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("`{s}` is not an RFC 3339 time like 2026-11-25T10:00:00Z"))
}

fn parse_day(s: &str) -> Option<time::Date> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &f).ok()
}

/// A day (its start, UTC) or an RFC 3339 time.
pub fn parse_day_or_time(s: &str) -> Result<time::OffsetDateTime, String> {
    match parse_day(s) {
        Some(d) => Ok(d.midnight().assume_utc()),
        None => parse_time(s)
            .map_err(|_| format!("`{s}` is neither a day like 2026-11-25 nor an RFC 3339 time")),
    }
}

/// A day (up to its end, UTC) or an RFC 3339 time.
pub fn parse_day_end_or_time(s: &str) -> Result<time::OffsetDateTime, String> {
    match parse_day(s) {
        Some(d) => Ok(d.midnight().assume_utc() + time::Duration::days(1)),
        None => parse_time(s)
            .map_err(|_| format!("`{s}` is neither a day like 2026-11-25 nor an RFC 3339 time")),
    }
}

/// Parses `90s`, `30m`, `24h`, `7d` (or plain seconds) into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30m, 24h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}`: unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(86400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("7d"), Ok(604800));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn days_and_times() {
        let from = parse_day_or_time("2026-01-31").unwrap();
        let to = parse_day_end_or_time("2026-01-31").unwrap();
        assert_eq!((to - from).whole_hours(), 24);
        assert_eq!(
            parse_day_or_time("2026-01-31T10:00:00Z").unwrap(),
            parse_day_end_or_time("2026-01-31T10:00:00Z").unwrap()
        );
        assert!(parse_day_or_time("31.01.2026").is_err());
    }

    #[test]
    fn options_are_consistent() {
        Opts::command().debug_assert();
    }

    /// Every subcommand, at every level, has a description and an example,
    /// and every flag a help text or a list of values.
    #[test]
    fn every_command_has_help_and_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_name() == "help" {
                return;
            }
            {
                if cmd.get_about().is_none() {
                    missing.push(format!("{path}: no description"));
                }
                let example = cmd
                    .get_after_help()
                    .map(|h| h.to_string().contains("exitnetctl "))
                    .unwrap_or(false);
                if !example {
                    missing.push(format!("{path}: no example"));
                }
                for a in cmd.get_arguments() {
                    let id = a.get_id().as_str();
                    if matches!(id, "help" | "version") {
                        continue;
                    }
                    if a.get_help().is_none() && !a.is_positional() {
                        missing.push(format!("{path} --{id}: no help"));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = Opts::command();
        cmd.build();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn a_value_outside_a_code_list_names_the_flag_and_the_values() {
        let e = Opts::try_parse_from([
            "exitnetctl",
            "peer",
            "policy",
            "prison-b",
            "--need-areas",
            "cognitive,banana",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("banana") && e.contains("--need-areas"), "{e}");
        assert!(e.contains("functional_reintegration"), "{e}");
        let ok = Opts::try_parse_from([
            "exitnetctl",
            "referral",
            "create",
            "--consent",
            "c",
            "--to",
            "prison-b",
            "--need-areas",
            "cognitive,security",
            "--age-band",
            "25_34",
        ]);
        assert!(ok.is_ok(), "{ok:?}");
    }
}
