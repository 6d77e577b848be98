//! `kubectl`, `helm` and shell commands run as a user runs them, with the
//! cluster's kubeconfig in `KUBECONFIG` and the repository as the working
//! folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helm::{helm_bin, kubectl_bin, repo_root};

/// What one command printed.
#[derive(Debug, Clone)]
pub struct Run {
    pub command: String,
    pub success: bool,
    /// `exit status: N`, or the signal that ended it.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// `Ok(stdout)`, or an error with the command and everything it printed.
    pub fn ok(self) -> anyhow::Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            anyhow::bail!(
                "`{}` failed ({}):\n{}{}",
                self.command,
                self.status,
                self.stdout,
                self.stderr
            )
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tools {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
    /// Extra environment for every command (see [`Tools::with_env`]).
    env: Vec<(String, String)>,
}

impl Tools {
    pub fn new(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_path_buf(),
            kubectl: kubectl_bin(),
            helm: helm_bin(),
            env: Vec::new(),
        }
    }

    /// The same tools with `key=value` in every command's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.run(&self.kubectl, args, None)
    }

    /// `kubectl ARGS` with `stdin` (e.g. `apply -f -`).
    pub fn kubectl_with_input(&self, args: &[&str], stdin: &str) -> Run {
        self.run(&self.kubectl, args, Some(stdin))
    }

    pub fn helm(&self, args: &[&str]) -> Run {
        self.run(&self.helm, args, None)
    }

    /// `bash -euo pipefail -c SCRIPT` with `kubectl` and `helm` first on
    /// `PATH`: how the README's shell blocks are run, word for word.
    pub fn shell(&self, script: &str) -> Run {
        let mut path = Vec::new();
        for tool in [&self.kubectl, &self.helm] {
            if let Some(dir) = tool.parent().filter(|d| !d.as_os_str().is_empty()) {
                path.push(dir.to_path_buf());
            }
        }
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", script]);
        if let Ok(joined) = std::env::join_paths(path) {
            cmd.env("PATH", joined);
        }
        self.finish(cmd, script.to_string(), None)
    }

    fn run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.finish(cmd, format!("{name} {}", args.join(" ")), stdin)
    }

    fn finish(&self, mut cmd: Command, command: String, stdin: Option<&str>) -> Run {
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo_root())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().and_then(|mut child| {
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(input.as_bytes())?;
            }
            child.wait_with_output()
        });
        match child {
            Ok(out) => Run {
                command,
                success: out.status.success(),
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => Run {
                command,
                success: false,
                status: "not started".into(),
                stdout: String::new(),
                stderr: format!(
                    "could not run it: {e} (scripts/setup.sh installs kubectl and helm into .tools/bin)"
                ),
            },
        }
    }
}
