//! The case manager's commands: `consent …` and `referral …`.

use super::*;

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum ConsentCommand {
    /// Record what the client agreed to.
    #[command(
        after_help = "Example:\n  exitnetctl consent record --subject client-17 --recipient prison-b,health-c \\\n    --need-area functional_reintegration,mental_health --field age_band,needs_narrative --valid-for 180d"
    )]
    Record {
        /// The client's reference in your own case files (never leaves this node).
        #[arg(long)]
        subject: String,
        /// Organisations that may receive referrals (repeat or comma-separate).
        #[arg(long = "recipient", value_delimiter = ',', required = true)]
        recipients: Vec<String>,
        /// What the data may be used for.
        #[arg(
            long = "purpose",
            alias = "purposes",
            value_delimiter = ',',
            default_value = "exit_support",
            value_parser = one_of(codes::PURPOSES)
        )]
        purposes: Vec<String>,
        /// Need areas referrals under this consent may address.
        #[arg(
            long = "need-area",
            alias = "need-areas",
            value_delimiter = ',',
            required = true,
            value_parser = one_of(codes::NEED_AREAS)
        )]
        need_areas: Vec<String>,
        /// Summary fields that may travel.
        #[arg(long = "field", alias = "fields", value_delimiter = ',', value_parser = one_of(codes::DATA_CATEGORIES))]
        fields: Vec<String>,
        /// How long the consent lasts, e.g. 180d.
        #[arg(long, default_value = "365d", value_parser = parse_duration)]
        valid_for: u64,
        /// How the consent was given.
        #[arg(long, default_value = "written", value_parser = one_of(codes::COLLECTION_METHODS))]
        method: String,
        /// Who witnessed a verbal consent (a role or a name).
        #[arg(long, default_value = "")]
        witness: String,
        /// The statute, when the legal basis is a statute rather than consent.
        #[arg(long)]
        statute: Option<String>,
        /// Restrictions that travel with the data.
        #[arg(long = "restriction", alias = "restrictions", value_delimiter = ',', value_parser = one_of(codes::RESTRICTIONS))]
        restrictions: Vec<String>,
        /// Idempotency key (default: a new one).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// The consents you may see, newest first (always a table, or a JSON array).
    #[command(after_help = "Example:\n  exitnetctl consent list --subject client-17")]
    List {
        /// Only the consents of this client reference.
        #[arg(long, default_value = "")]
        subject: String,
    },
    /// One consent in full.
    #[command(after_help = "Example:\n  exitnetctl consent show 0193…")]
    Show { consent_id: String },
    /// Withdraw: every recipient of every referral under it purges.
    #[command(after_help = "Example:\n  exitnetctl consent withdraw 0193…")]
    Withdraw { consent_id: String },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum ReferralCommand {
    /// Send a referral under a consent.
    #[command(
        after_help = "Example:\n  exitnetctl referral create --consent 0193… --to prison-b \\\n    --need-area functional_reintegration --service housing --urgency soon \\\n    --age-band 25_34 --narrative - < needs.txt\n\nThe recipient must be an active peer the consent names; only the summary fields\nthe consent and both peer policies allow may be given."
    )]
    Create {
        /// The consent it rests on (`exitnetctl consent list`).
        #[arg(long)]
        consent: String,
        /// The receiving organisation: an active peer the consent names.
        #[arg(long)]
        to: String,
        /// Need areas the referral addresses (repeat or comma-separate).
        #[arg(
            long = "need-area",
            alias = "need-areas",
            value_delimiter = ',',
            required = true,
            value_parser = one_of(codes::NEED_AREAS)
        )]
        need_areas: Vec<String>,
        /// Services asked for (repeat or comma-separate).
        #[arg(long = "service", alias = "services", value_delimiter = ',', value_parser = one_of(codes::SERVICES))]
        services: Vec<String>,
        /// How soon: routine, soon (within weeks), urgent (within days).
        #[arg(long, default_value = "routine", value_parser = one_of(codes::URGENCIES))]
        urgency: String,
        /// The client's age band.
        #[arg(long, value_parser = one_of(codes::AGE_BANDS))]
        age_band: Option<String>,
        /// The client's gender.
        #[arg(long, value_parser = one_of(codes::GENDERS))]
        gender: Option<String>,
        /// Languages the client speaks, BCP 47 tags (comma-separated).
        #[arg(long = "language", alias = "languages", value_delimiter = ',')]
        languages: Vec<String>,
        /// Where the client is supervised or supported (never an address).
        #[arg(long, value_parser = one_of(codes::SETTINGS))]
        setting: Option<String>,
        /// The movement the client is leaving (only if the consent covers it).
        #[arg(long, value_parser = one_of(codes::IDEOLOGICAL_CONTEXTS))]
        ideological_context: Option<String>,
        /// The assessed risk level.
        #[arg(long, value_parser = one_of(codes::RISK_LEVELS))]
        risk_level: Option<String>,
        /// The risk of retaliation against the client.
        #[arg(long, value_parser = one_of(codes::RISK_LEVELS))]
        retaliation_risk: Option<String>,
        /// About the security situation (at most 500 characters; never where the client is).
        #[arg(long)]
        security_note: Option<String>,
        /// What the client needs (at most 2,000 characters; never where they are);
        /// `-` reads it from standard input, keeping it out of `ps` and shell history.
        #[arg(long)]
        narrative: Option<String>,
        /// Idempotency key (default: a new one).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Referrals you may see, newest first (always a table, or a JSON array).
    #[command(after_help = "Example:\n  exitnetctl referral list --inbound --state received")]
    List {
        /// Only those we received.
        #[arg(long, conflicts_with = "outbound")]
        inbound: bool,
        /// Only those we sent.
        #[arg(long)]
        outbound: bool,
        /// Only those in this state.
        #[arg(long, value_parser = one_of(REFERRAL_STATES))]
        state: Option<String>,
        /// Only those exchanged with this organisation.
        #[arg(long)]
        peer: Option<String>,
    },
    /// One referral in full: summary, terms, outcome, reasons, history.
    #[command(after_help = "Example:\n  exitnetctl referral show 0193…")]
    Show { referral_id: String },
    /// Accept a referral you received.
    #[command(after_help = "Example:\n  exitnetctl referral accept 0193…")]
    Accept { referral_id: String },
    /// Decline a referral you received, with a reason.
    #[command(
        after_help = "Example:\n  exitnetctl referral decline 0193… --reason no_capacity --text \"Waiting list until March.\""
    )]
    Decline {
        referral_id: String,
        /// Why.
        #[arg(long, value_parser = one_of(codes::DECLINE_REASONS))]
        reason: String,
        /// A few words for the sender (at most 500 characters).
        #[arg(long, default_value = "")]
        text: String,
    },
    /// Mark an accepted referral as in progress.
    #[command(after_help = "Example:\n  exitnetctl referral start 0193…")]
    Start { referral_id: String },
    /// Put a referral on hold.
    #[command(
        after_help = "Example:\n  exitnetctl referral hold 0193… --text \"Client in hospital.\""
    )]
    Hold {
        referral_id: String,
        /// Why (at most 500 characters).
        #[arg(long, default_value = "")]
        text: String,
    },
    /// Close a referral as completed, with its outcome.
    #[command(
        after_help = "Example:\n  exitnetctl referral complete 0193… --delivered --reintegration substantial --note \"Flat found.\""
    )]
    Complete {
        referral_id: String,
        /// Progress on disengagement.
        #[arg(long, value_parser = one_of(codes::PROGRESS))]
        disengagement: Option<String>,
        /// Progress on deradicalisation.
        #[arg(long, value_parser = one_of(codes::PROGRESS))]
        deradicalisation: Option<String>,
        /// Progress on reintegration.
        #[arg(long, value_parser = one_of(codes::PROGRESS))]
        reintegration: Option<String>,
        /// Progress on rehabilitation.
        #[arg(long, value_parser = one_of(codes::PROGRESS))]
        rehabilitation: Option<String>,
        /// The requested service was delivered.
        #[arg(long)]
        delivered: bool,
        /// A note for the sender (at most 500 characters).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Close a referral as failed, with a reason.
    #[command(
        after_help = "Example:\n  exitnetctl referral fail 0193… --reason client_unreachable --text \"No answer in 6 weeks.\""
    )]
    Fail {
        referral_id: String,
        /// Why.
        #[arg(long, value_parser = one_of(codes::FAILURE_REASONS))]
        reason: String,
        /// A few words for the sender (at most 500 characters).
        #[arg(long, default_value = "")]
        text: String,
    },
    /// Withdraw a referral you sent: the recipient purges it.
    #[command(after_help = "Example:\n  exitnetctl referral withdraw 0193…")]
    Withdraw { referral_id: String },
}
