//! `crdgen`: writes the ModelPub CRDs as YAML into `crds/generated/` and
//! the Helm chart's `crds/` folder; `crdgen --check` only compares and fails
//! naming every stale file, for CI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use modelpub_crds::crd;

/// Where the YAML goes, relative to the repository root.
const OUTPUT_DIRS: [&str; 2] = ["crds/generated", "charts/modelpub/crds"];

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    let mut check = false;
    let mut root = repo_root();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--root" => root = args.next().context("--root needs a directory")?.into(),
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [--root DIR]\n\
                     Writes the ModelPub CRDs into {}; --check fails if a committed file differs.",
                    OUTPUT_DIRS.join(" and ")
                );
                return Ok(());
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }

    let mut stale = Vec::new();
    for (names, definition) in crd::all() {
        let yaml = crd::to_yaml(&definition)
            .with_context(|| format!("cannot serialize the {} CRD", names.kind))?;
        for dir in OUTPUT_DIRS {
            let path = root.join(dir).join(crd::file_name(&names));
            let current = std::fs::read_to_string(&path).ok();
            if current.as_deref() == Some(yaml.as_str()) {
                continue;
            }
            if check {
                stale.push(path);
            } else {
                write(&path, &yaml)?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "stale or missing CRD YAML: {}; run `cargo run -p modelpub-crds --bin crdgen`",
            list.join(", ")
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The repository root: this crate's parent folder.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
