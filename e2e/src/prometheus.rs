//! A real Prometheus server (the Debian package's `prometheus` binary) on
//! loopback, for the suites that check what the metrics endpoints and the
//! Grafana dashboard show. It runs from a temporary folder with its own
//! config and storage, and is killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `prometheus` is: `$PROMETHEUS_BIN`, or the one on PATH.
/// `scripts/setup.sh` installs it (Debian package `prometheus`).
pub fn prometheus_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "the `prometheus` binary is not installed: run scripts/setup.sh (it installs the \
             Debian package `prometheus`), or set PROMETHEUS_BIN"
                .to_string()
        })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One scrape job: a name and its `host:port` targets.
pub struct Job {
    pub name: String,
    pub targets: Vec<String>,
}

/// A scrape job whose targets come from a `file_sd` file (rewritten as
/// pods come and go), with `relabel_configs` (replace actions).
pub struct FileSdJob {
    pub name: String,
    pub file: PathBuf,
    pub relabelings: Vec<crate::pod_monitor::Relabel>,
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    agent: ureq::Agent,
}

impl Prometheus {
    /// Starts Prometheus under `dir` scraping `jobs` every second, and waits
    /// until it is ready.
    pub fn start(dir: &Path, jobs: &[Job]) -> Result<Self, String> {
        Self::start_with(dir, jobs, &[])
    }

    /// As [`Self::start`], with jobs discovered from `file_sd` files too
    /// (re-read every second).
    pub fn start_with(dir: &Path, jobs: &[Job], discovered: &[FileSdJob]) -> Result<Self, String> {
        let bin = prometheus_bin()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for job in jobs {
            let targets: Vec<String> = job.targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "  - job_name: '{}'\n    static_configs:\n      - targets: [{}]\n",
                job.name,
                targets.join(", ")
            ));
        }
        for job in discovered {
            config.push_str(&format!(
                "  - job_name: '{}'\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n    relabel_configs:\n",
                job.name,
                job.file.display()
            ));
            for r in &job.relabelings {
                let sources: Vec<String> =
                    r.source_labels.iter().map(|s| format!("'{s}'")).collect();
                config.push_str(&format!(
                    "      - source_labels: [{}]\n        target_label: '{}'\n",
                    sources.join(", "),
                    r.target_label
                ));
            }
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).map_err(|e| format!("prometheus.yml: {e}"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = dir.join("prometheus.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut prometheus = Self {
            child,
            addr,
            log,
            agent,
        };
        prometheus.await_ready(Duration::from_secs(60))?;
        Ok(prometheus)
    }

    fn await_ready(&mut self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log_text()
                ));
            }
            if let Ok(r) = self
                .agent
                .get(format!("http://{}/-/ready", self.addr))
                .call()
                && r.status() == 200
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "prometheus was not ready within {} s:\n{}",
                    limit.as_secs(),
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/query_range`: the `data.result` array, or why not.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step_secs: f64,
    ) -> Result<Vec<serde_json::Value>, String> {
        let mut response = self
            .agent
            .get(format!("http://{}/api/v1/query_range", self.addr))
            .query("query", expr)
            .query("start", format!("{start:.3}"))
            .query("end", format!("{end:.3}"))
            .query("step", format!("{step_secs}"))
            .call()
            .map_err(|e| format!("query_range: {e}"))?;
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("query_range body: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("query_range answered {status} with non-JSON: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("query_range answered {status}: {body}"));
        }
        json["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("query_range: no data.result in {body}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The finite values of a range-query result (`[[t, "v"], ...]` per series).
pub fn finite_values(result: &[serde_json::Value]) -> Vec<f64> {
    result
        .iter()
        .filter_map(|series| series["values"].as_array())
        .flatten()
        .filter_map(|point| point.get(1)?.as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect()
}
