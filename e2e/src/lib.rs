//! Helpers for the end-to-end suites: they drive the built `modelpub`
//! binary exactly as a user would, as separate processes; [`helm`],
//! [`manifest`] and [`dockerfile`] check the deployment artefacts (the helm
//! chart with the real helm, the images' Dockerfiles).
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod cluster;
pub mod dockerfile;
pub mod helm;
pub mod kubelet;
pub mod manifest;
pub mod pod_monitor;
pub mod prometheus;
pub mod rbac;
pub mod readme;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `modelpub` binary under test: `$MODELPUB_BIN`, or the one built into
/// this workspace's target folder next to the test executable
/// (`cargo build --workspace --bins` builds it; `scripts/test.sh` does).
pub fn modelpub_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MODELPUB_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/modelpub
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("modelpub");
    assert!(
        bin.is_file(),
        "{} not found: build it first with `cargo build --workspace --bins` or set MODELPUB_BIN",
        bin.display()
    );
    bin
}

/// Runs `modelpub ARGS` and returns its output.
pub fn modelpub(args: &[&str]) -> Output {
    Command::new(modelpub_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run modelpub")
}

/// stdout and stderr together, for assertions on what a user reads.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts a clean failure: non-zero exit, the expected words, no panic.
pub fn assert_fails_with(out: &Output, needles: &[&str]) {
    let all = text(out);
    assert!(
        !out.status.success(),
        "expected failure, got success:\n{all}"
    );
    assert!(
        !all.contains("panicked"),
        "a panic is never an acceptable error:\n{all}"
    );
    for n in needles {
        assert!(
            all.to_lowercase().contains(&n.to_lowercase()),
            "error should mention `{n}`:\n{all}"
        );
    }
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
