//! The README's walk-throughs, read as the suites run them: word for word.

use anyhow::Context as _;

use crate::helm::repo_root;

/// Image registry substituted for the README's `<registry>`.
pub const REGISTRY_ENV: &str = "MODELPUB_E2E_REGISTRY";

/// The ```` ```sh ```` blocks of the README section headed `## {heading}`
/// (up to the next `## `), with `<registry>` replaced by
/// `$MODELPUB_E2E_REGISTRY` (default `ghcr.io/modelpub`, what the local
/// kubelet runs and the kind workflow loads).
pub fn shell_blocks(heading: &str) -> anyhow::Result<Vec<String>> {
    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    let section = readme
        .split(&format!("\n## {heading}"))
        .nth(1)
        .with_context(|| format!("README.md has no `## {heading}` section"))?;
    let section = section.split("\n## ").next().unwrap_or(section);
    let registry = std::env::var(REGISTRY_ENV).unwrap_or_else(|_| "ghcr.io/modelpub".into());
    Ok(section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .map(|b| b.replace("<registry>", &registry))
        .collect())
}
