//! The real `helm` and `kubectl` binaries, for the chart and cluster
//! suites. They come from `scripts/setup.sh` (into `.tools/bin/`) or from
//! `PATH`; a missing one is a test failure that says how to install it,
//! never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (the e2e crate's parent folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the repository")
        .to_path_buf()
}

/// `charts/modelpub`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("modelpub")
}

/// A tool `scripts/setup.sh` installs: `$<env_var>`, the repository's
/// `.tools/bin/<name>`, or the first `<name>` on `PATH`.
pub fn find_tool(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(PathBuf::from(p));
    }
    let local = repo_root().join(".tools").join("bin").join(name);
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `helm` ([`find_tool`], `$HELM_BIN`). Panics naming `scripts/setup.sh`
/// when there is none.
pub fn helm_bin() -> PathBuf {
    find_tool("helm", "HELM_BIN").unwrap_or_else(|| {
        panic!(
            "helm not found in .tools/bin or on PATH: run scripts/setup.sh \
             (it installs helm v4 into .tools/bin), or set HELM_BIN"
        )
    })
}

/// `kubectl` ([`find_tool`], `$KUBECTL_BIN`). Panics naming
/// `scripts/setup.sh` when there is none.
pub fn kubectl_bin() -> PathBuf {
    find_tool("kubectl", "KUBECTL_BIN").unwrap_or_else(|| {
        panic!(
            "kubectl not found in .tools/bin or on PATH: run scripts/setup.sh \
             (it installs kubectl 1.35 into .tools/bin), or set KUBECTL_BIN"
        )
    })
}

/// What one helm run printed.
#[derive(Debug)]
pub struct HelmRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `helm ARGS` in the repository root, with a private, empty helm
/// home so a developer's repositories and plugins cannot change the result.
pub fn helm(args: &[&str]) -> HelmRun {
    let bin = helm_bin();
    let home = std::env::temp_dir().join(format!("modelpub-helm-home-{}", std::process::id()));
    let out = Command::new(&bin)
        .args(args)
        .current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (run scripts/setup.sh)", bin.display()));
    HelmRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `helm template RELEASE charts/modelpub -n NAMESPACE EXTRA...`; panics with
/// helm's message when rendering fails.
pub fn template(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let chart = chart.to_str().expect("chart path is UTF-8");
    let mut args = vec!["template", release, chart, "--namespace", namespace];
    args.extend_from_slice(extra);
    let run = helm(&args);
    assert!(
        run.success,
        "helm {} failed:\n{}{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run.stdout
}
