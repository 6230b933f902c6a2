//! `exitnet-node init`: writes the configuration file of a new organisation.
//! On a terminal it asks for each value not given as a flag, with a default
//! where one makes sense, and asks again (showing the allowed values) when an
//! answer is not valid. With `--yes`, or when standard input is not a
//! terminal, it takes the flags and the defaults and asks nothing. It never
//! overwrites a file without `--force`, and what it writes passes
//! `exitnet-node config check`.

use crate::config::Config;
use crate::config::check::{self, For};
use crate::config::schema;
use crate::domain::{OrgId, endpoint_check, org_name_check};
use anyhow::{Context, bail};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The federation listener `init` writes (every interface: peers come from outside).
const FEDERATION_LISTEN: &str = "0.0.0.0:7710";

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Asks for what the flags leave out when standard input is a terminal; \
    with --yes (or no terminal) it asks nothing.\n\n\
    Example:\n  exitnet-node init --config exitnet.toml --org-id exit-nord \\\n    \
    --name 'Exit Nord e.V.' --sector ngo --need-areas social_reintegration,cognitive \\\n    \
    --services mentoring,family_support --languages de,en --settings open \\\n    \
    --advertise exitnet.exit-nord.example:7710 \\\n    \
    --issuer https://id.exit-nord.example/realms/exitnet --audience exitnet-node --yes"
)]
pub struct InitArgs {
    /// The file to write.
    #[arg(long, value_name = "FILE", default_value = "exitnet.toml")]
    pub config: PathBuf,
    /// Organisation ID: 3 to 63 characters a-z, 0-9 and -. Peers pin it: it can never change.
    #[arg(long)]
    pub org_id: Option<String>,
    /// Display name shown to peers (default: the organisation ID).
    #[arg(long)]
    pub name: Option<String>,
    /// Sector of the organisation.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(schema::sectors()))]
    pub sector: Option<String>,
    /// Areas of need the organisation works on (comma-separated).
    #[arg(long, value_delimiter = ',', num_args = 0.., value_parser = clap::builder::PossibleValuesParser::new(schema::need_areas()))]
    pub need_areas: Option<Vec<String>>,
    /// Services the organisation offers (comma-separated).
    #[arg(long, value_delimiter = ',', num_args = 0.., value_parser = clap::builder::PossibleValuesParser::new(schema::services()))]
    pub services: Option<Vec<String>>,
    /// Languages it works in, BCP 47 tags (comma-separated, such as de,en).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub languages: Option<Vec<String>>,
    /// Settings it works in (comma-separated).
    #[arg(long, value_delimiter = ',', num_args = 0.., value_parser = clap::builder::PossibleValuesParser::new(schema::work_settings()))]
    pub settings: Option<Vec<String>>,
    /// host:port peers reach this node at, written into invitations
    /// (federation.advertise), such as exitnet.example.org:7710.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// The OpenID provider's issuer URL (auth.issuer).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// The audience access tokens for this node name (auth.audience).
    #[arg(long)]
    pub audience: Option<String>,
    /// Where the node keeps its identity and SQLite database (default ./exitnet-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ask nothing: take the flags and the defaults.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// What the file says about the organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    pub org_id: String,
    pub name: Option<String>,
    pub sector: Option<String>,
    pub need_areas: Vec<String>,
    pub services: Vec<String>,
    pub languages: Vec<String>,
    pub settings: Vec<String>,
    pub advertise: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub data_dir: Option<PathBuf>,
}

// Each answer's check; the error says what is expected. Blank means "none"
// where a value is optional.

fn org_id(s: &str) -> Result<String, String> {
    OrgId::parse("org.id", s).map(|_| s.to_owned()).map_err(|_| {
        "expected 3 to 63 characters a-z, 0-9 and -, starting with a letter or digit, such as exit-nord"
            .to_owned()
    })
}

fn name(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    org_name_check(s)
        .map(|_| Some(s.to_owned()))
        .map_err(|e| e.rule)
}

fn one_of(s: &str, allowed: &[&str]) -> Result<Option<String>, String> {
    if s.is_empty() {
        Ok(None)
    } else if allowed.contains(&s) {
        Ok(Some(s.to_owned()))
    } else {
        Err(format!("{s} is not one of {}", allowed.join(", ")))
    }
}

fn list_of(s: &str, allowed: &[&str]) -> Result<Vec<String>, String> {
    let items: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    let bad: Vec<&str> = items
        .iter()
        .copied()
        .filter(|i| !allowed.contains(i))
        .collect();
    if bad.is_empty() {
        Ok(items.into_iter().map(str::to_owned).collect())
    } else {
        Err(format!(
            "{} {} not one of {}",
            bad.join(", "),
            if bad.len() == 1 { "is" } else { "are" },
            allowed.join(", ")
        ))
    }
}

fn languages(s: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .collect();
    for l in &items {
        if l.len() > 35 || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "{l} is not a BCP 47 language tag; expected tags such as de, en, pt-BR"
            ));
        }
    }
    Ok(items)
}

fn advertise(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    endpoint_check("federation.advertise", s)
        .map(|_| Some(s.to_owned()))
        .map_err(|_| "expected host:port such as exitnet.example.org:7710".to_owned())
}

fn issuer(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        Ok(None)
    } else if check::is_http_url(s) {
        Ok(Some(s.to_owned()))
    } else {
        Err("expected an https:// URL such as https://id.example.org/realms/exitnet".to_owned())
    }
}

fn audience(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        Err("expected the audience your provider writes into access tokens for this node, such as exitnet-node".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

/// Asks on `out` and reads answers from `input`.
pub struct Prompter<R, W> {
    input: R,
    out: W,
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    pub fn new(input: R, out: W) -> Self {
        Self { input, out }
    }

    /// Asks until `check` accepts the answer; a blank answer is `default`
    /// (or blank, when there is none).
    pub fn ask<T>(
        &mut self,
        question: &str,
        default: Option<&str>,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        loop {
            match default {
                Some(d) if !d.is_empty() => write!(self.out, "{question} [{d}]: ")?,
                _ => write!(self.out, "{question}: ")?,
            }
            self.out.flush()?;
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                writeln!(self.out)?;
                bail!("the input ended before every question was answered");
            }
            let answer = match line.trim() {
                "" => default.unwrap_or(""),
                a => a,
            };
            match check(answer) {
                Ok(v) => return Ok(v),
                Err(e) => writeln!(self.out, "  {e}")?,
            }
        }
    }
}

fn flag<T>(
    flag: &str,
    value: &str,
    check: impl Fn(&str) -> Result<T, String>,
) -> anyhow::Result<T> {
    check(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// This machine's name, as a guess at the address peers reach it at.
fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let h = h.trim();
    (!h.is_empty() && endpoint_check("x", &format!("{h}:7710")).is_ok()).then(|| h.to_owned())
}

/// A list asked for: its flag, its question, the allowed values, the flag's value.
type ListQuestion<'a> = (&'a str, &'a str, Vec<&'static str>, &'a Option<Vec<String>>);

/// The answers: from the flags, then (with a prompter) asked, else defaults.
pub fn gather<R: BufRead, W: Write>(
    args: &InitArgs,
    mut ask: Option<&mut Prompter<R, W>>,
    host: Option<&str>,
) -> anyhow::Result<Answers> {
    let joined = |v: &Option<Vec<String>>| v.as_ref().map(|v| v.join(","));
    let mut a = Answers {
        data_dir: args.data_dir.clone(),
        ..Answers::default()
    };
    a.org_id = match (&args.org_id, ask.as_deref_mut()) {
        (Some(v), _) => flag("--org-id", v, org_id)?,
        (None, Some(p)) => p.ask(
            "Organisation ID (a-z, 0-9 and -, 3 to 63 characters; peers pin it, it can never change)",
            None,
            org_id,
        )?,
        (None, None) => bail!(
            "--org-id is required when init asks nothing (with --yes, or when standard input is not a terminal): \
             3 to 63 characters a-z, 0-9 and -, such as exit-nord"
        ),
    };
    a.name = match (&args.name, ask.as_deref_mut()) {
        (Some(v), _) => flag("--name", v, name)?,
        (None, Some(p)) => p.ask("Display name shown to peers", Some(&a.org_id), name)?,
        (None, None) => None,
    };
    let sectors = schema::sectors();
    a.sector = match (&args.sector, ask.as_deref_mut()) {
        (Some(v), _) => flag("--sector", v, |s| one_of(s, &sectors))?,
        (None, Some(p)) => p.ask(
            &format!("Sector ({}; blank: none)", sectors.join(", ")),
            None,
            |s| one_of(s, &sectors),
        )?,
        (None, None) => None,
    };
    let lists: [ListQuestion<'_>; 3] = [
        (
            "--need-areas",
            "Areas of need",
            schema::need_areas(),
            &args.need_areas,
        ),
        (
            "--services",
            "Services offered",
            schema::services(),
            &args.services,
        ),
        (
            "--settings",
            "Settings worked in",
            schema::work_settings(),
            &args.settings,
        ),
    ];
    let mut chosen = Vec::new();
    for (name, question, allowed, given) in lists {
        chosen.push(match (joined(given), ask.as_deref_mut()) {
            (Some(v), _) => flag(name, &v, |s| list_of(s, &allowed))?,
            (None, Some(p)) => p.ask(
                &format!(
                    "{question}, comma-separated ({}; blank: none)",
                    allowed.join(", ")
                ),
                None,
                |s| list_of(s, &allowed),
            )?,
            (None, None) => Vec::new(),
        });
    }
    let [need_areas, services, settings] = <[Vec<String>; 3]>::try_from(chosen)
        .map_err(|_| anyhow::anyhow!("three lists expected"))?;
    a.need_areas = need_areas;
    a.services = services;
    a.settings = settings;
    a.languages = match (joined(&args.languages), ask.as_deref_mut()) {
        (Some(v), _) => flag("--languages", &v, languages)?,
        (None, Some(p)) => p.ask(
            "Languages worked in, comma-separated BCP 47 tags such as de,en (blank: none)",
            None,
            languages,
        )?,
        (None, None) => Vec::new(),
    };
    let guess = host.map(|h| format!("{h}:7710"));
    a.advertise = match (&args.advertise, ask.as_deref_mut()) {
        (Some(v), _) => flag("--advertise", v, advertise)?,
        (None, Some(p)) => p.ask(
            "Address peers reach this node at, host:port (written into invitations)",
            guess.as_deref(),
            advertise,
        )?,
        (None, None) => None,
    };
    a.issuer = match (&args.issuer, ask.as_deref_mut()) {
        (Some(v), _) => flag("--issuer", v, issuer)?,
        (None, Some(p)) => p.ask(
            "OpenID provider: issuer URL (blank: set up sign-in later)",
            None,
            issuer,
        )?,
        (None, None) => None,
    };
    a.audience = match (&args.audience, ask, &a.issuer) {
        (Some(v), _, _) => Some(flag("--audience", v, audience)?),
        (None, Some(p), Some(_)) => Some(p.ask(
            "Audience that access tokens for this node name",
            Some("exitnet-node"),
            audience,
        )?),
        (None, None, Some(_)) => bail!(
            "--audience is required with --issuer: the audience your provider writes into access tokens for this node"
        ),
        (None, _, None) => None,
    };
    if a.audience.is_some() && a.issuer.is_none() {
        bail!("--audience needs --issuer too (the OpenID provider)");
    }
    Ok(a)
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    toml::Value::Array(
        items
            .iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect(),
    )
    .to_string()
}

/// The configuration file's text.
pub fn render(a: &Answers, path: &Path) -> String {
    let name = a.name.as_deref().unwrap_or(&a.org_id);
    let file = path.display();
    let mut t = format!(
        "# Exitnet node of {name} ({id}), written by `exitnet-node init`.\n\
         # Check it:  exitnet-node config check --config {file} [--connect]\n\
         # Start it:  exitnet-node run --config {file}\n\
         # Every setting: README.md, Configuration. A database password belongs in the\n\
         # environment (EXITNET_DATABASE_URL), never in this file. The master key is made by\n\
         # the node in its key directory ([keys] below), never in the data directory.\n",
        id = a.org_id
    );
    if let Some(d) = &a.data_dir {
        t.push_str(&format!(
            "\n# Identity, SQLite database and admin socket.\ndata_dir = {}\n",
            quoted(&d.display().to_string())
        ));
    }
    t.push_str(
        "\n# The master key of case content at rest: generations in a directory of their own,\n\
         # by default beside the data directory (its name with -keys added), never inside it.\n\
         # Back it up apart from the data; keep its copies no longer than the data backups.\n\
         [keys]\n\
         # dir = \"/var/lib/exitnet-keys\"\n\
         rotation_days = 30\n\
         # How long your organisation keeps database backups: a purged referral is unreadable\n\
         # in every backup after rotation_days + backup_retention_days (docs/operations.md).\n\
         backup_retention_days = 30\n",
    );
    t.push_str("\n[org]\n# Peers pin this ID: it can never change.\n");
    t.push_str(&format!("id = {}\n", quoted(&a.org_id)));
    t.push_str(&format!("name = {}\n", quoted(name)));
    match &a.sector {
        Some(s) => t.push_str(&format!("sector = {}\n", quoted(s))),
        None => t.push_str(&format!(
            "# sector = \"ngo\"  # one of {}\n",
            schema::sectors().join(", ")
        )),
    }
    t.push_str(&format!("need_areas = {}\n", list(&a.need_areas)));
    t.push_str(&format!("services = {}\n", list(&a.services)));
    t.push_str(&format!("languages = {}\n", list(&a.languages)));
    t.push_str(&format!("settings = {}\n", list(&a.settings)));
    t.push_str("accepting_referrals = true\n");
    t.push_str(&format!(
        "\n[federation]\n# Peers connect here (mutual TLS, pinned keys).\nlisten = {}\n",
        quoted(FEDERATION_LISTEN)
    ));
    t.push_str("# The host:port invitations carry: where peers reach this node.\n");
    match &a.advertise {
        Some(adv) => t.push_str(&format!("advertise = {}\n", quoted(adv))),
        None => t.push_str("# advertise = \"exitnet.example.org:7710\"\n"),
    }
    t.push_str("\n[auth]\n# Sign-in for case managers and agency systems: the organisation's OpenID provider.\nmode = \"oidc\"\n");
    match (&a.issuer, &a.audience) {
        (Some(i), Some(aud)) => {
            t.push_str(&format!(
                "issuer = {}\naudience = {}\n",
                quoted(i),
                quoted(aud)
            ));
        }
        _ => t.push_str(
            "# Until these are set the client API refuses every call but health and reflection.\n\
             # issuer = \"https://id.example.org/realms/exitnet\"\n\
             # audience = \"exitnet-node\"\n",
        ),
    }
    t.push_str(
        "# Provider roles or groups mapped to case_manager, supervisor, auditor, system:\n\
         # [auth.role_map]\n# \"exit-staff\" = \"case_manager\"\n",
    );
    t
}

/// `exitnet-node init`.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let path = &args.config;
    if path.exists() && !args.force {
        bail!(
            "{} exists; init does not overwrite it (pass --force to replace it)",
            path.display()
        );
    }
    let interactive = !args.yes && std::io::stdin().is_terminal();
    let answers = if interactive {
        let stdin = std::io::stdin();
        let mut p = Prompter::new(stdin.lock(), std::io::stderr());
        eprintln!(
            "Writing {} for a new organisation. Press Enter to take the value in brackets.",
            path.display()
        );
        gather(&args, Some(&mut p), hostname().as_deref())?
    } else {
        gather::<std::io::StdinLock<'_>, std::io::Stderr>(&args, None, None)?
    };
    let text = render(&answers, path);
    let config =
        Config::from_toml(&text).context("the file init made does not pass its own check")?;
    if interactive {
        let stdin = std::io::stdin();
        let mut p = Prompter::new(stdin.lock(), std::io::stderr());
        eprintln!("\n{text}");
        let write = p.ask(
            &format!("Write this to {}? (y or n)", path.display()),
            Some("y"),
            |s| match s.to_ascii_lowercase().as_str() {
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err("expected y or n".to_owned()),
            },
        )?;
        if !write {
            bail!("nothing written");
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    for w in check::offline(&config, For::Check).warnings {
        if !w.starts_with("org.id") {
            eprintln!("warning: {w}");
        }
    }
    println!(
        "next: exitnet-node config check --config {f} --connect\n      exitnet-node run --config {f}",
        f = path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> InitArgs {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            init: InitArgs,
        }
        let mut all = vec!["init"];
        all.extend_from_slice(flags);
        Cli::try_parse_from(all).unwrap().init
    }

    fn asked(flags: &[&str], input: &str) -> (anyhow::Result<Answers>, String) {
        let mut out = Vec::new();
        let result = {
            let mut p = Prompter::new(input.as_bytes(), &mut out);
            gather(&args(flags), Some(&mut p), Some("node1.example.org"))
        };
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn prompts_ask_again_until_valid_and_take_defaults() {
        let input = "Bad Id\nexit-nord\n\nchurch\nngo\ncognitive,banana\ncognitive,security\n\nopen\nde,en\n\nhttps://id.example.org/realms/x\n\n";
        let (a, out) = asked(&[], input);
        let a = a.unwrap();
        assert_eq!(a.org_id, "exit-nord");
        assert_eq!(a.name, Some("exit-nord".into()));
        assert_eq!(a.sector, Some("ngo".into()));
        assert_eq!(a.need_areas, vec!["cognitive", "security"]);
        assert!(a.services.is_empty());
        assert_eq!(a.settings, vec!["open"]);
        assert_eq!(a.languages, vec!["de", "en"]);
        assert_eq!(a.advertise.as_deref(), Some("node1.example.org:7710"));
        assert_eq!(a.issuer.as_deref(), Some("https://id.example.org/realms/x"));
        assert_eq!(a.audience.as_deref(), Some("exitnet-node"));
        // Each invalid answer was refused, saying what is allowed.
        assert!(out.contains("expected 3 to 63 characters"), "{out}");
        assert!(
            out.contains("church is not one of ngo, prison_probation"),
            "{out}"
        );
        assert!(
            out.contains("banana is not one of functional_reintegration"),
            "{out}"
        );
        let text = render(&a, Path::new("exitnet.toml"));
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.org.id.as_deref(), Some("exit-nord"));
        assert_eq!(
            c.federation.advertise.as_deref(),
            Some("node1.example.org:7710")
        );
        assert_eq!(c.auth.audience.as_deref(), Some("exitnet-node"));
        // The key directory stays the default, beside (not inside) the data directory.
        assert!(c.keys.dir.is_none());
        assert_eq!(c.keys.backup_retention_days, 30);
        assert!(
            !c.key_dir()
                .starts_with(std::path::absolute(&c.data_dir).unwrap())
        );
    }

    #[test]
    fn flags_are_not_asked_again_and_input_ending_is_an_error() {
        let (a, out) = asked(
            &[
                "--org-id",
                "ngo-a",
                "--name",
                "NGO A",
                "--sector",
                "ngo",
                "--need-areas",
                "cognitive",
                "--services",
                "mentoring",
                "--settings",
                "open",
                "--languages",
                "de",
                "--advertise",
                "a.example:7710",
                "--issuer",
                "https://idp.example",
            ],
            "urn:ngo-a\n",
        );
        let a = a.unwrap();
        assert_eq!(a.audience.as_deref(), Some("urn:ngo-a"));
        assert_eq!(
            out.matches(": ").count(),
            1,
            "only the audience was asked: {out}"
        );
        let (a, _) = asked(&[], "ngo-a\n");
        assert!(a.unwrap_err().to_string().contains("input ended"));
    }

    #[test]
    fn without_prompts_flags_are_checked_and_org_id_required() {
        let none: Option<&mut Prompter<&[u8], Vec<u8>>> = None;
        let e = gather(&args(&["--sector", "ngo"]), none, None).unwrap_err();
        assert!(e.to_string().contains("--org-id is required"), "{e}");
        let a = gather::<&[u8], Vec<u8>>(&args(&["--org-id", "ngo-a"]), None, None).unwrap();
        assert_eq!(a.org_id, "ngo-a");
        assert_eq!(a.advertise, None);
        let text = render(&a, Path::new("x.toml"));
        assert!(Config::from_toml(&text).is_ok(), "{text}");
        for (flags, needle) in [
            (&["--org-id", "Bad"][..], "--org-id: expected 3 to 63"),
            (
                &["--org-id", "ngo-a", "--advertise", "nope"][..],
                "--advertise: expected host:port",
            ),
            (
                &["--org-id", "ngo-a", "--issuer", "idp"][..],
                "--issuer: expected an https://",
            ),
            (
                &["--org-id", "ngo-a", "--issuer", "https://idp"][..],
                "--audience is required",
            ),
            (
                &["--org-id", "ngo-a", "--languages", "de_DE"][..],
                "--languages: de_DE is not a BCP 47",
            ),
        ] {
            let e = gather::<&[u8], Vec<u8>>(&args(flags), None, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{flags:?}: {e}");
        }
        // Code lists are checked by the flag parser, naming the allowed values.
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            init: InitArgs,
        }
        let e = Cli::try_parse_from(["init", "--sector", "church"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("church") && e.contains("prison_probation"),
            "{e}"
        );
    }

    #[test]
    fn rendered_values_are_quoted_safely() {
        let a = Answers {
            org_id: "ngo-a".into(),
            name: Some("Exit \"Nord\" e.V.\\ # not a comment".into()),
            ..Answers::default()
        };
        let c = Config::from_toml(&render(&a, Path::new("x.toml"))).unwrap();
        assert_eq!(
            c.org.name.as_deref(),
            Some("Exit \"Nord\" e.V.\\ # not a comment")
        );
    }
}
