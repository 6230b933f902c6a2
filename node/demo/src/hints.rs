//! What the demo prints when it keeps running: `exitnetctl` commands that
//! work exactly as printed, from another terminal in the checkout, while the
//! nodes are up. Each is one line after the prompt `  $ `; the integration
//! test `demo` runs every one of them.

use crate::Org;

/// The prompt in front of each command.
pub const PROMPT: &str = "  $ ";
/// The line that ends the list of commands.
pub const END: &str = "Ctrl-C stops the three nodes and deletes their data.";

/// What the commands are about.
pub struct Story<'a> {
    pub ngo: &'a Org,
    pub prison: &'a Org,
    pub clinic: &'a Org,
    pub completed: &'a str,
    pub withdrawn: &'a str,
    pub alice: &'a str,
    pub carol: &'a str,
}

/// `exitnetctl` built from this checkout with the demo's own profile (no
/// stale binary, nothing to install).
fn ctl() -> &'static str {
    if cfg!(debug_assertions) {
        "cargo run -q -p exitnetctl --"
    } else {
        "cargo run -q --release -p exitnetctl --"
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn admin(org: &Org, args: &str) -> String {
    format!(
        "{} --socket {} {args}",
        ctl(),
        quote(&org.admin_socket.display().to_string())
    )
}

/// A call on the client API as a case manager, with a development token
/// minted by the node for them.
fn api(org: &Org, who: &str, args: &str) -> String {
    format!(
        "{} {args} --api {} --token \"$({})\"",
        ctl(),
        org.api,
        admin(
            org,
            &format!("dev-token --role case_manager --subject {}", quote(who))
        )
    )
}

pub fn print(s: &Story<'_>) {
    let commands = [
        (
            "the NGO's peers and the verification codes its administrator read aloud",
            admin(s.ngo, "peer list"),
        ),
        ("probation's peers", admin(s.prison, "peer list")),
        (
            "the NGO's audit trail, checked against the checkpoints its peers countersigned",
            admin(s.ngo, "audit verify"),
        ),
        (
            "Alice's referrals at the NGO, on the client API with a development token for her",
            api(s.ngo, s.alice, "referral list"),
        ),
        (
            "the completed referral and its outcome, as Alice sees it",
            api(
                s.ngo,
                s.alice,
                &format!("referral show {}", quote(s.completed)),
            ),
        ),
        (
            "the signed receipts the NGO keeps for the withdrawn referral (delivery and purge)",
            admin(s.ngo, &format!("receipt export {}", quote(s.withdrawn))),
        ),
        (
            "the referral Carol took on at the trauma clinic",
            api(s.clinic, s.carol, "referral list --inbound"),
        ),
        (
            "the trauma clinic's audit trail",
            admin(s.clinic, "audit verify"),
        ),
    ];
    println!(
        "\nThe three nodes keep running. Try these in another terminal, in this checkout (the first\n\
         one builds exitnetctl):"
    );
    for (what, command) in commands {
        println!("\n  # {what}\n{PROMPT}{command}");
    }
    println!("\n{END}");
}
