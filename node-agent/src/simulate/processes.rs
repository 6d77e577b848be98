//! Starts the parties as separate OS processes of this same binary and
//! watches them: the federation is real processes talking gRPC over mutual
//! TLS on loopback, not threads sharing memory.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::party::PartyDir;

pub struct Party {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Party {
    /// Runs `modelpub <args...>` with its output in `log`. Torch is held to
    /// one thread per process so several parties share the cores fairly.
    pub fn spawn(name: &str, args: &[&str], log: &Path, dir: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the modelpub binary")?;
        // Appending: a participant restarted after a crash keeps the log of
        // its earlier life.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(exe)
            .args(args)
            .current_dir(dir)
            .env(modelpub_agent_config::pod::TORCH_THREADS_ENV, "1")
            .env("MODELPUB_LOG_FORMAT", "plain")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
            exited: None,
        })
    }

    pub fn role(role: &str, party: &PartyDir, name: &str) -> anyhow::Result<Self> {
        let dir = party.root().to_string_lossy().to_string();
        Self::spawn(name, &[role, "--dir", &dir], &party.log(), party.root())
    }

    /// `Some(status)` once the process has ended.
    pub fn poll(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    pub async fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                self.exited = Some(status);
                Ok(status)
            }
            Err(_) => {
                self.child.kill().await.ok();
                bail!(
                    "{} did not finish within {} s; its log: {}",
                    self.name,
                    limit.as_secs(),
                    self.log.display()
                )
            }
        }
    }

    pub async fn kill(&mut self) {
        if self.exited.is_none() {
            self.child.kill().await.ok();
        }
    }

    /// The last lines of the log, to show why a party failed.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Waits for the aggregator to write its bound address, or to die trying.
pub async fn await_address(
    aggregator: &mut Party,
    address_file: &Path,
    limit: Duration,
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(address_file)
            && !a.trim().is_empty()
        {
            return Ok(a.trim().to_string());
        }
        if let Some(status) = aggregator.poll()? {
            bail!(
                "the aggregator exited ({status}) before listening:\n{}",
                aggregator.log_tail(20)
            );
        }
        if started.elapsed() > limit {
            bail!(
                "the aggregator did not start listening within {} s",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
