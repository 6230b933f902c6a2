//! `exitnet-demo --keep-running`: every `exitnetctl` command it prints
//! works exactly as printed, run by a shell from the checkout while the demo
//! runs; Ctrl-C then stops the nodes and deletes their data.

use exitnet_demo::hints::{END, PROMPT};
use exitnet_tests::node::binary;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The checkout, where a person would paste the commands.
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// PATH with the directory of the cargo running the tests first, so the
/// printed `cargo run …` finds cargo as it does in a person's terminal.
fn path_with_cargo() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match std::env::var("CARGO")
        .ok()
        .and_then(|c| Path::new(&c).parent().map(Path::to_path_buf))
    {
        Some(dir) => format!("{}:{path}", dir.display()),
        None => path,
    }
}

#[tokio::test]
async fn every_command_the_demo_prints_works_as_printed() {
    // Builds the demo and exitnetctl, as the printed commands expect.
    let demo_bin = binary("exitnet-demo").unwrap();
    let mut demo = Command::new(demo_bin)
        .args(["--keep-running"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut text = String::new();
    let mut commands = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await? {
            text.push_str(&line);
            text.push('\n');
            if let Some(command) = line.strip_prefix(PROMPT) {
                commands.push(command.to_owned());
            }
            if line == END {
                return Ok(true);
            }
        }
        Ok::<_, std::io::Error>(false)
    })
    .await;
    assert!(
        matches!(read, Ok(Ok(true))),
        "the demo did not get to its commands ({read:?}):\n{text}"
    );
    for needle in [
        "Alice, a case manager at the NGO",
        "Carol, a case manager at the trauma clinic",
        "completed by carol",
        "service delivered: yes",
        "the NGO keeps the purge receipt: signed by probation-service",
        "stating that it deleted the summary",
        "audit verify: the trail verifies",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        commands.len() >= 8,
        "expected the demo's commands, found {commands:?} in:\n{text}"
    );

    let socket = commands
        .iter()
        .find_map(|c| {
            c.split_whitespace()
                .skip_while(|w| *w != "--socket")
                .nth(1)
                .map(str::to_owned)
        })
        .expect("a command with --socket");
    for command in &commands {
        assert!(
            command.starts_with("cargo run -q -p exitnetctl -- "),
            "not an exitnetctl command: {command}"
        );
        let started = std::time::Instant::now();
        let out = tokio::time::timeout(
            // The first one may build exitnetctl on its own.
            Duration::from_secs(600),
            Command::new("bash")
                .args(["-c", command])
                .current_dir(checkout())
                .env("PATH", path_with_cargo())
                .env_remove("EXITNET_ADMIN_SOCKET")
                .env_remove("EXITNET_OUTPUT")
                .env_remove("EXITNET_CTL_API")
                .env_remove("EXITNET_CTL_TOKEN")
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{command} did not finish within 600 s"))
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{:.1} s: {command}", started.elapsed().as_secs_f64());
        assert!(
            out.status.success() && !stdout.trim().is_empty(),
            "{command}\nstatus {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if command.ends_with(" peer list") {
            assert!(stdout.contains("active"), "{command}\n{stdout}");
        }
    }

    // Ctrl-C: the nodes stop and their data is deleted.
    let pid = demo.id().expect("the demo's pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait())
        .await
        .expect("the demo stops within 60 s of Ctrl-C")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = demo.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(status.success(), "the demo ended with {status}:\n{stderr}");
    let data = Path::new(&socket)
        .parent()
        .and_then(Path::parent)
        .expect("the demo's directory");
    assert!(!data.exists(), "{} is still there", data.display());
}
