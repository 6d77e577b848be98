//! Which local binary stands in for a container image.
//!
//! The process kubelet runs only the project's own images, as the binaries
//! built from this repository: `ghcr.io/modelpub/modelpub-node-agent:*` is
//! `target/<profile>/modelpub` (or `$MODELPUB_BIN`) and
//! `ghcr.io/modelpub/modelpub-operator:*` is `target/<profile>/modelpub-operator`.
//! Any other image is refused with an error the pod reports, so a pod never
//! "succeeds" without having run what it asked for.

use std::path::{Path, PathBuf};

/// The node-agent image repository (tag and digest are ignored: the local
/// build is what runs).
pub const NODE_AGENT_IMAGE: &str = "ghcr.io/modelpub/modelpub-node-agent";
pub const OPERATOR_IMAGE: &str = "ghcr.io/modelpub/modelpub-operator";

/// What an image provides to a process: its entrypoint binary, the
/// environment its Dockerfile sets, and its WORKDIR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRuntime {
    /// The local file run as the image's ENTRYPOINT.
    pub binary: PathBuf,
    /// Names the entrypoint answers to in `command[0]` (a pod may spell
    /// the ENTRYPOINT out: `modelpub` or `/usr/local/bin/modelpub`).
    pub entrypoint_names: Vec<String>,
    /// `ENV` of the image, as seen by the local process.
    pub env: Vec<(String, String)>,
    /// `WORKDIR` of the image (a path inside the container).
    pub workdir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image `{0}` cannot run on the process kubelet: only the project's images \
         ({NODE_AGENT_IMAGE}, {OPERATOR_IMAGE}) run here, as the binaries built from this repository"
    )]
    NotRunnable(String),
    #[error(
        "image `{image}` runs {binary}, which does not exist: build it first (cargo build --bins)"
    )]
    MissingBinary { image: String, binary: PathBuf },
    #[error(
        "container command `{command}` is not the entrypoint of image `{image}` ({expected}): \
         the process kubelet can only run the image's own binary"
    )]
    ForeignCommand {
        image: String,
        command: String,
        expected: String,
    },
    #[error("container `{0}` has no image")]
    NoImage(String),
}

/// Image repositories and the runtimes that stand in for them.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    entries: Vec<(String, ImageRuntime)>,
}

impl ImageMap {
    /// The project's two images, built into `bin_dir` (`target/<profile>`);
    /// `$MODELPUB_BIN` overrides the node-agent binary as it does for the
    /// other end-to-end suites. `data_dir` stands in for the image's
    /// `/usr/share/modelpub/data`.
    pub fn project(bin_dir: &Path, data_dir: &Path) -> Self {
        let node_agent = std::env::var_os("MODELPUB_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| bin_dir.join("modelpub"));
        // The node-agent image puts libtorch on LD_LIBRARY_PATH; locally
        // that is wherever `scripts/env.sh` found it.
        let mut agent_env = vec![(
            "MODELPUB_DATA_DIR".to_string(),
            data_dir.display().to_string(),
        )];
        if let Ok(ld) = std::env::var("LD_LIBRARY_PATH") {
            agent_env.push(("LD_LIBRARY_PATH".into(), ld));
        }
        Self::default()
            .with(
                NODE_AGENT_IMAGE,
                ImageRuntime {
                    binary: node_agent,
                    entrypoint_names: vec!["modelpub".into(), "/usr/local/bin/modelpub".into()],
                    env: agent_env,
                    workdir: Some("/tmp".into()),
                },
            )
            .with(
                OPERATOR_IMAGE,
                ImageRuntime {
                    binary: bin_dir.join("modelpub-operator"),
                    entrypoint_names: vec![
                        "modelpub-operator".into(),
                        "/usr/local/bin/modelpub-operator".into(),
                    ],
                    env: Vec::new(),
                    workdir: None,
                },
            )
    }

    /// Adds (or replaces) the runtime of an image repository.
    pub fn with(mut self, repository: &str, runtime: ImageRuntime) -> Self {
        self.entries.retain(|(r, _)| r != repository);
        self.entries.push((repository.to_string(), runtime));
        self
    }

    /// The runtime of `image` (`repo[:tag][@digest]`).
    pub fn resolve(&self, image: &str) -> Result<&ImageRuntime, ImageError> {
        let repo = repository(image);
        self.entries
            .iter()
            .find(|(r, _)| r == repo)
            .map(|(_, rt)| rt)
            .ok_or_else(|| ImageError::NotRunnable(image.to_string()))
    }

    /// The binary and argv of a container: `command` (which must name the
    /// image's entrypoint) or the entrypoint, then `args`.
    pub fn command_line(
        &self,
        container: &str,
        image: Option<&str>,
        command: Option<&[String]>,
        args: Option<&[String]>,
    ) -> Result<(ImageRuntime, Vec<String>), ImageError> {
        let image = image.ok_or_else(|| ImageError::NoImage(container.to_string()))?;
        let runtime = self.resolve(image)?;
        if !runtime.binary.is_file() {
            return Err(ImageError::MissingBinary {
                image: image.to_string(),
                binary: runtime.binary.clone(),
            });
        }
        let mut argv = Vec::new();
        if let Some(command) = command.filter(|c| !c.is_empty()) {
            if !runtime.entrypoint_names.iter().any(|n| n == &command[0]) {
                return Err(ImageError::ForeignCommand {
                    image: image.to_string(),
                    command: command[0].clone(),
                    expected: runtime.entrypoint_names.join(" or "),
                });
            }
            argv.extend(command[1..].iter().cloned());
        }
        argv.extend(args.unwrap_or_default().iter().cloned());
        Ok((runtime.clone(), argv))
    }
}

/// `registry/path/name` of `registry/path/name[:tag][@digest]` (a `:` before
/// the last `/` is a registry port, not a tag).
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with_binaries() -> (tempfile::TempDir, ImageMap) {
        let dir = tempfile::tempdir().unwrap();
        for b in ["modelpub", "modelpub-operator"] {
            std::fs::write(dir.path().join(b), b"").unwrap();
        }
        let map = ImageMap::project(dir.path(), Path::new("/data"));
        (dir, map)
    }

    #[test]
    fn repository_drops_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(
            repository("ghcr.io/modelpub/modelpub-node-agent:0.1.0"),
            NODE_AGENT_IMAGE
        );
        assert_eq!(
            repository("ghcr.io/modelpub/modelpub-operator"),
            OPERATOR_IMAGE
        );
        assert_eq!(
            repository("localhost:5000/modelpub-node-agent@sha256:abc"),
            "localhost:5000/modelpub-node-agent"
        );
        assert_eq!(repository("localhost:5000/x:1"), "localhost:5000/x");
    }

    #[test]
    fn project_images_run_their_binaries_with_args() {
        if std::env::var_os("MODELPUB_BIN").is_some() {
            return; // the override replaces the node-agent binary checked below
        }
        let (dir, map) = map_with_binaries();
        let args = vec!["vault".to_string(), "seal".to_string()];
        let (rt, argv) = map
            .command_line(
                "seal",
                Some("ghcr.io/modelpub/modelpub-node-agent:0.1.0"),
                None,
                Some(&args),
            )
            .unwrap();
        assert_eq!(rt.binary, dir.path().join("modelpub"));
        assert_eq!(argv, args);
        assert!(
            rt.env
                .contains(&("MODELPUB_DATA_DIR".into(), "/data".into()))
        );
        let command = vec!["/usr/local/bin/modelpub-operator".to_string(), "--x".into()];
        let (rt, argv) = map
            .command_line(
                "op",
                Some("ghcr.io/modelpub/modelpub-operator:1"),
                Some(&command),
                Some(&["--y".to_string()]),
            )
            .unwrap();
        assert_eq!(rt.binary, dir.path().join("modelpub-operator"));
        assert_eq!(argv, ["--x", "--y"]);
    }

    #[test]
    fn other_images_and_commands_are_refused() {
        let (_dir, map) = map_with_binaries();
        let e = map
            .command_line("c", Some("nginx:1.27"), None, None)
            .unwrap_err();
        assert_eq!(e, ImageError::NotRunnable("nginx:1.27".into()));
        assert!(e.to_string().contains("cannot run on the process kubelet"));
        let e = map
            .command_line(
                "c",
                Some("ghcr.io/modelpub/modelpub-node-agent:1"),
                Some(&["sh".to_string(), "-c".into()]),
                None,
            )
            .unwrap_err();
        assert!(matches!(e, ImageError::ForeignCommand { .. }), "{e}");
        let e = map.command_line("c", None, None, None).unwrap_err();
        assert_eq!(e, ImageError::NoImage("c".into()));
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let map = ImageMap::default().with(
            OPERATOR_IMAGE,
            ImageRuntime {
                binary: dir.path().join("absent"),
                entrypoint_names: vec![],
                env: vec![],
                workdir: None,
            },
        );
        let e = map
            .command_line("c", Some(OPERATOR_IMAGE), None, None)
            .unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
    }
}
