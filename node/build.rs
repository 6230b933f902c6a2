//! Names the commit the node is built from, for `exitnet_build_info`:
//! `EXITNET_BUILD_COMMIT` if set (a build without the repository, e.g. a
//! container image), else `git rev-parse --short HEAD`, else `unknown`.
//!
//! It runs again only when `.git/HEAD` (a checkout of another branch or
//! commit) or `EXITNET_BUILD_COMMIT` changes, not on every commit: a fresh
//! clone (CI, a release) always names its commit; a long-lived working tree
//! may name the commit of the build script's last run.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=EXITNET_BUILD_COMMIT");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let head = Path::new(&manifest_dir).join("../.git/HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed={}", head.display());
    }
    let commit = std::env::var("EXITNET_BUILD_COMMIT")
        .ok()
        .filter(|c| valid(c))
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&manifest_dir)
                .output()
                .ok()?;
            let c = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && valid(&c)).then_some(c)
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=EXITNET_BUILD_COMMIT={commit}");
}

/// A hexadecimal commit hash (a label value: nothing else gets in).
fn valid(c: &str) -> bool {
    (4..=40).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit())
}
