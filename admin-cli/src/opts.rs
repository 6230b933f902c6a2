//! Command-line options (clap). Execution lives in `run`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "exitnetctl",
    version,
    about = "Administer an Exitnet node over its local admin socket"
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
    /// Output for people (table) or for scripts (json).
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        env = "EXITNET_OUTPUT",
        default_value = "table"
    )]
    pub output: Output,
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
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Peers: invitations, joining, approval and the lifecycle.
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Refused calls recorded by the node (who, when, why).
    Security {
        #[command(subcommand)]
        command: SecurityCommand,
    },
    /// The audit trail: verify it, export it, answer a subject access request.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Signed delivery and purge receipts: export them, verify one.
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// Mint a client-API token (only when the node runs with auth.mode = "dev").
    DevToken {
        #[arg(long)]
        role: String,
        #[arg(long)]
        subject: String,
        #[arg(long, default_value = "")]
        team: String,
    },
    /// Sign in to the organisation's identity provider (OAuth 2.0 device flow).
    Login {
        /// The provider's issuer URL.
        #[arg(long, env = "EXITNET_CTL_ISSUER")]
        issuer: String,
        /// The provider's client ID for exitnetctl.
        #[arg(long, env = "EXITNET_CTL_CLIENT_ID", default_value = "exitnetctl")]
        client_id: String,
    },
    /// Forget the stored sign-in.
    Logout,
    /// Calls on the node's client API, as the signed-in user.
    Api {
        /// The client API address (plaintext on loopback).
        #[arg(long, env = "EXITNET_CTL_API", default_value = "127.0.0.1:7711")]
        api: String,
        /// A bearer token to use instead of the stored sign-in.
        #[arg(long, env = "EXITNET_CTL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ApiCommand,
    },
    /// Consent records on the client API, as the signed-in case manager.
    Consent {
        #[command(flatten)]
        target: ApiTarget,
        #[command(subcommand)]
        command: ConsentCommand,
    },
    /// Referrals on the client API, as the signed-in case manager.
    Referral {
        #[command(flatten)]
        target: ApiTarget,
        #[command(subcommand)]
        command: ReferralCommand,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the client API is and how to sign in to it.
#[derive(Debug, clap::Args)]
pub struct ApiTarget {
    /// The client API address (plaintext on loopback).
    #[arg(
        long,
        global = true,
        env = "EXITNET_CTL_API",
        default_value = "127.0.0.1:7711"
    )]
    pub api: String,
    /// A bearer token to use instead of the stored sign-in.
    #[arg(long, global = true, env = "EXITNET_CTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an agency system: the case manager the call is made for.
    #[arg(long, global = true)]
    pub on_behalf_of: Option<String>,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum ConsentCommand {
    /// Record what the client agreed to.
    Record {
        /// The client's reference in your own case files (never leaves this node).
        #[arg(long)]
        subject: String,
        /// Organisations that may receive referrals (repeat or comma-separate).
        #[arg(long = "recipient", value_delimiter = ',', required = true)]
        recipients: Vec<String>,
        #[arg(
            long = "purpose",
            value_delimiter = ',',
            default_value = "exit_support"
        )]
        purposes: Vec<String>,
        #[arg(long = "need-area", value_delimiter = ',', required = true)]
        need_areas: Vec<String>,
        /// Summary fields that may travel (age_band, gender, languages, setting,
        /// ideological_context, risk_level, security_considerations, needs_narrative).
        #[arg(long = "field", value_delimiter = ',')]
        fields: Vec<String>,
        /// How long the consent lasts, e.g. 180d.
        #[arg(long, default_value = "365d", value_parser = parse_duration)]
        valid_for: u64,
        /// written, verbal_witnessed or digital.
        #[arg(long, default_value = "written")]
        method: String,
        #[arg(long, default_value = "")]
        witness: String,
        /// The statute, when the legal basis is a statute rather than consent.
        #[arg(long)]
        statute: Option<String>,
        #[arg(long = "restriction", value_delimiter = ',')]
        restrictions: Vec<String>,
        /// Idempotency key (default: a new one).
        #[arg(long)]
        request_id: Option<String>,
    },
    List {
        #[arg(long, default_value = "")]
        subject: String,
    },
    Show {
        consent_id: String,
    },
    /// Withdraw: every recipient of every referral under it purges.
    Withdraw {
        consent_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReferralCommand {
    /// Send a referral under a consent.
    Create {
        #[arg(long)]
        consent: String,
        #[arg(long)]
        to: String,
        #[arg(long = "need-area", value_delimiter = ',', required = true)]
        need_areas: Vec<String>,
        #[arg(long = "service", value_delimiter = ',')]
        services: Vec<String>,
        /// routine, soon or urgent.
        #[arg(long, default_value = "routine")]
        urgency: String,
        /// under_15, 15_17, 18_24, 25_34, 35_49, 50_and_over.
        #[arg(long)]
        age_band: Option<String>,
        /// low, moderate, high, not_assessed.
        #[arg(long)]
        risk_level: Option<String>,
        /// What the client needs (at most 2,000 characters; never where they are);
        /// `-` reads it from standard input, keeping it out of `ps` and shell history.
        #[arg(long)]
        narrative: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
    },
    List {
        #[arg(long, conflicts_with = "outbound")]
        inbound: bool,
        #[arg(long)]
        outbound: bool,
    },
    Show {
        referral_id: String,
    },
    Accept {
        referral_id: String,
    },
    Decline {
        referral_id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        text: String,
    },
    Start {
        referral_id: String,
    },
    Hold {
        referral_id: String,
        #[arg(long, default_value = "")]
        text: String,
    },
    Complete {
        referral_id: String,
        /// Progress (none, some, substantial) on each goal.
        #[arg(long)]
        disengagement: Option<String>,
        #[arg(long)]
        deradicalisation: Option<String>,
        #[arg(long)]
        reintegration: Option<String>,
        #[arg(long)]
        rehabilitation: Option<String>,
        /// The requested service was delivered.
        #[arg(long)]
        delivered: bool,
        #[arg(long, default_value = "")]
        note: String,
    },
    Fail {
        referral_id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        text: String,
    },
    Withdraw {
        referral_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// The node's organisation, protocol version and key fingerprint.
    Info,
    /// Active peers from the directory, optionally by need area or service.
    Peers {
        #[arg(long)]
        need_area: Option<String>,
        #[arg(long)]
        service: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Organisation, key fingerprint and federation endpoint.
    Show,
    /// Make a new key; peers are told and accept the old one for the overlap.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Create a single-use invitation code to give another administrator.
    Invite {
        /// Lifetime, e.g. 30m, 24h, 7d.
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
    Join { code: String },
    /// All peers with their states and verification codes.
    List,
    /// One peer in full, with the verification code to read aloud.
    Show { org: String },
    /// Approve a pending join request.
    Approve { org: String },
    /// Refuse a pending join request.
    Reject { org: String },
    /// Pause the peering; every new call in both directions is refused.
    Suspend { org: String },
    /// Resume a suspended peering.
    Resume { org: String },
    /// End the peering for good.
    Revoke { org: String },
    /// Show or change what may be sent to and accepted from a peer.
    Policy {
        org: String,
        /// Need areas allowed (comma-separated code names).
        #[arg(long, value_delimiter = ',')]
        need_areas: Option<Vec<String>>,
        /// Summary fields allowed (age_band, gender, languages, setting,
        /// ideological_context, risk_level, security_considerations, needs_narrative).
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// Purposes allowed.
        #[arg(long, value_delimiter = ',')]
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
    /// The most recent refused calls.
    Events {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain, the checkpoints and what peers witnessed; exits
    /// non-zero naming the first record that fails.
    Verify {
        /// Do not ask peers for the checkpoints they witnessed.
        #[arg(long)]
        local_only: bool,
    },
    /// Write the trail as JSON lines, oldest first.
    Export {
        /// Only records at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<time::OffsetDateTime>,
        /// Only records before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<time::OffsetDateTime>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        object_id: Option<String>,
    },
    /// Everything this node holds and has shared about one client (GDPR Art. 15), as JSON.
    Subject {
        /// The client's local reference (or the pseudonym a peer used).
        local_ref: String,
    },
    /// Sign a checkpoint of the chain now and send it to the peers to witness.
    Checkpoint,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// The signed receipts kept for a referral, as JSON lines (one per receipt).
    Export { referral_id: String },
    /// Check receipts exported from a node (a file of JSON lines) against the
    /// issuer's pinned key; exits non-zero if any does not verify.
    Verify { file: PathBuf },
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("`{s}` is not an RFC 3339 time like 2026-11-25T10:00:00Z"))
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(86400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("7d"), Ok(604800));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn options_are_consistent() {
        use clap::CommandFactory;
        Opts::command().debug_assert();
    }
}
