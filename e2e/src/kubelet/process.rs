//! Starting a container as a local process and stopping it the way a
//! kubelet does: SIGTERM, then SIGKILL once the grace period is over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Everything needed to start one container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub binary: PathBuf,
    pub argv: Vec<String>,
    /// The whole environment: a container does not inherit the kubelet's.
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// stdout and stderr are appended here (`kubectl logs`).
    pub log: PathBuf,
}

pub fn spawn(l: &Launch) -> std::io::Result<Child> {
    if let Some(parent) = l.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)?;
    std::fs::create_dir_all(&l.cwd)?;
    Command::new(&l.binary)
        .args(&l.argv)
        .env_clear()
        .envs(&l.env)
        .current_dir(&l.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
}

/// `(exitCode, signal)` as Kubernetes reports them: a process killed by
/// signal N exits with 128 + N.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    if let Some(code) = status.code() {
        return (code, None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return (128 + sig, Some(sig));
        }
    }
    (1, None)
}

/// SIGTERM, wait up to `grace`, then SIGKILL; the exit status.
pub async fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        // Already gone is fine: wait() below collects it.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return status;
        }
    }
    child.kill().await?;
    child.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(dir: &std::path::Path, script: &str) -> Launch {
        Launch {
            binary: "/bin/sh".into(),
            argv: vec!["-c".into(), script.into()],
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            cwd: dir.join("cwd"),
            log: dir.join("logs/c.log"),
        }
    }

    #[tokio::test]
    async fn runs_with_only_its_env_and_logs_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(&launch(
            dir.path(),
            "echo $GREETING ${HOME:-nohome}; pwd; exit 3",
        ))
        .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(exit_code(status), (3, None));
        let log = std::fs::read_to_string(dir.path().join("logs/c.log")).unwrap();
        assert!(log.starts_with("hi nohome\n"), "{log}");
        assert!(log.contains("/cwd"), "{log}");
    }

    #[tokio::test]
    async fn terminate_sends_sigterm_then_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let mut polite = spawn(&launch(dir.path(), "sleep 30")).unwrap();
        let status = terminate(&mut polite, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(exit_code(status), (128 + 15, Some(15)));
        let mut stubborn = spawn(&launch(
            dir.path(),
            "trap '' TERM; echo ready; sleep 30 & wait",
        ))
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = terminate(&mut stubborn, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(exit_code(status), (128 + 9, Some(9)));
    }
}
