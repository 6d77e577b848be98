//! `modelpub simulate` options, and where its built-in data sets live.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use modelpub_protocol::secagg::MaskPrg;
use serde::Serialize;

use crate::data::{self, Dataset, Partition};

#[derive(Debug, Clone, Args, Serialize)]
pub struct SimulateOptions {
    /// digits | shakespeare | csv:PATH[:LABEL_COLUMN] | text:DIR
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// Number of institutions, each a separate process with its own vault.
    #[arg(long, default_value_t = 3)]
    pub institutions: usize,
    /// The institutions' names, comma-separated, one per institution
    /// (default inst-0, inst-1, ...). A participant's batch order is seeded
    /// from its name, so the vault names of a FederationRound reproduce
    /// that round exactly.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub names: Vec<String>,
    /// Federated rounds.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// label | role | iid | dirichlet:ALPHA (default: label for tables, role for text).
    #[arg(long)]
    pub partition: Option<String>,
    /// How the aggregator combines updates.
    #[arg(long, value_enum, default_value_t = StrategyName::Fedavg)]
    pub strategy: StrategyName,
    /// FedProx: weight of the proximal term (default 0.01; only with
    /// --strategy fedprox).
    #[arg(long, value_name = "MU")]
    pub fedprox_mu: Option<f64>,
    /// FedAdam: the server's learning rate (default 0.03; only with
    /// --strategy fedadam).
    #[arg(long, value_name = "RATE")]
    pub fedadam_server_learning_rate: Option<f64>,
    /// FedAdam: first-moment decay (default 0.9).
    #[arg(long, value_name = "BETA1")]
    pub fedadam_beta1: Option<f64>,
    /// FedAdam: second-moment decay (default 0.99).
    #[arg(long, value_name = "BETA2")]
    pub fedadam_beta2: Option<f64>,
    /// FedAdam: adaptivity, added to the root of the second moment (default 0.001).
    #[arg(long, value_name = "TAU")]
    pub fedadam_tau: Option<f64>,
    /// Local epochs per round (default depends on the data set).
    #[arg(long)]
    pub local_epochs: Option<u32>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where vaults, identities, audit logs, logs and the report go.
    #[arg(long, default_value = "./modelpub-out")]
    pub out: PathBuf,
    /// Fraction of the whole data set held out for testing.
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// Local learning rate (default depends on the data set).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Local mini-batch size (default depends on the data set).
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Cap on mini-batches per local epoch, 0 for none (default depends on the data set).
    #[arg(long)]
    pub max_batches_per_epoch: Option<u32>,
    /// A round fails if its updates have not arrived after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub round_timeout: u64,
    /// Skip training each institution alone for comparison.
    #[arg(long)]
    pub skip_local_only: bool,
    /// Folder holding digits.csv.gz and tinyshakespeare.txt (default: the
    /// repository's data/ folder, or $MODELPUB_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train on CUDA when libtorch sees a GPU.
    #[arg(long)]
    pub cuda: bool,
    /// SecAgg+: the aggregator sees only the sum of the updates.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub secure_aggregation: String,
    /// Shares needed to reconstruct a secret, i.e. the fewest survivors a
    /// secure round completes with (default: a majority of neighbours).
    #[arg(long)]
    pub secagg_threshold: Option<u32>,
    /// Per-coordinate clip of updates before secure quantisation.
    #[arg(long, default_value_t = 4.0)]
    pub secagg_clip: f32,
    /// The stream cipher that expands secure-aggregation masks: auto means
    /// AES-128-CTR when every party has AES instructions, else ChaCha20.
    #[arg(long, value_enum, default_value_t = MaskPrgName::Auto)]
    pub mask_prg: MaskPrgName,
    /// A round completes with at least this many updates (default: all but
    /// the ones --dropout kills).
    #[arg(long)]
    pub min_participants: Option<u32>,
    /// Fraction of participants killed at random stages of each round.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Hidden layer widths of the tabular model (default: the data set's),
    /// e.g. 133333 for a 10^7-parameter digits model.
    #[arg(long, value_delimiter = ',', value_name = "H[,H...]")]
    pub hidden_sizes: Option<Vec<i64>>,
    /// Differential privacy budget ε (turns on client-level DP-FedAvg).
    #[arg(long)]
    pub dp_epsilon: Option<f64>,
    /// Differential privacy δ.
    #[arg(long, default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// L2 norm every update is clipped to under DP.
    #[arg(long, default_value_t = 1.0)]
    pub dp_clip: f64,
    /// Noise multiplier under DP (default: the smallest that fits all rounds in the budget).
    #[arg(long)]
    pub dp_noise_multiplier: Option<f64>,
    /// Wire encoding of plain updates (needs --secure-aggregation off).
    #[arg(long, value_enum, default_value_t = CompressionName::None)]
    pub compression: CompressionName,
    /// Serve the aggregator's /metrics, /healthz, /readyz and /status on
    /// HOST:PORT (plain HTTP), for Prometheus and the operator.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Serve each institution's participant /metrics too: the first on
    /// HOST:PORT, the next on HOST:PORT+1, and so on (as the chart's
    /// PodMonitor scrapes each participant pod).
    #[arg(long, value_name = "HOST:PORT")]
    pub participant_metrics_from: Option<String>,
}

/// Folders of the output directory an institution may not be named after.
const RESERVED_NAMES: [&str; 3] = ["aggregator", "testset", "federation-ca"];

/// `--strategy`: checked by clap, which lists the choices in `--help`
/// and in the error for any other value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyName {
    /// Weighted average of the updates.
    Fedavg,
    /// FedAvg with a proximal term keeping local models near the global one.
    Fedprox,
    /// Adam on the server over the averaged update.
    Fedadam,
}

impl StrategyName {
    /// The name `StrategyConfig::parse` and the config files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fedavg => "fedavg",
            Self::Fedprox => "fedprox",
            Self::Fedadam => "fedadam",
        }
    }
}

/// `--mask-prg`: the secure-aggregation mask PRG, or the aggregator's pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum MaskPrgName {
    #[serde(rename = "auto")]
    Auto,
    #[value(name = "aes-128-ctr")]
    #[serde(rename = "aes-128-ctr")]
    Aes128Ctr,
    #[value(name = "chacha20")]
    #[serde(rename = "chacha20")]
    ChaCha20,
}

impl MaskPrgName {
    /// The configured PRG; `None` lets the aggregator choose per round.
    pub fn prg(self) -> Option<MaskPrg> {
        match self {
            Self::Auto => None,
            Self::Aes128Ctr => Some(MaskPrg::Aes128Ctr),
            Self::ChaCha20 => Some(MaskPrg::ChaCha20),
        }
    }
}

/// `--compression`: the wire encoding of plain updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    /// 32-bit floats.
    None,
    /// 16-bit floats (half the bytes).
    F16,
    /// 8-bit quantisation with a per-tensor scale (a quarter of the bytes).
    Int8,
}

impl CompressionName {
    /// The name `compression::parse` and the config files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }
}

impl SimulateOptions {
    /// The participants' metrics addresses `--participant-metrics-from`
    /// names, one per institution; none without the flag.
    pub fn participant_metrics_addrs(&self) -> anyhow::Result<Vec<String>> {
        let Some(first) = &self.participant_metrics_from else {
            return Ok(Vec::new());
        };
        let addr: std::net::SocketAddr = first.parse().map_err(|e| {
            anyhow::anyhow!(
                "--participant-metrics-from {first:?} is not HOST:PORT with an IP address: {e}"
            )
        })?;
        let n = self.institutions.max(1);
        let last = usize::from(addr.port()) + n - 1;
        if addr.port() == 0 || last > usize::from(u16::MAX) {
            bail!(
                "--participant-metrics-from {first}: {n} institutions need ports {} to {last}, past 65535 or from 0",
                addr.port()
            );
        }
        Ok((0..n)
            .map(|i| std::net::SocketAddr::new(addr.ip(), addr.port() + i as u16).to_string())
            .collect())
    }

    /// The strategy with its knobs: the flags given, the node-agent's
    /// defaults for the rest. A knob of another strategy is an error, as
    /// the FederationRound CRD refuses `mu` without `fedprox`.
    pub fn strategy_config(&self) -> anyhow::Result<crate::config::StrategyConfig> {
        use crate::config::StrategyConfig;
        let fedadam_flags = [
            (
                "--fedadam-server-learning-rate",
                self.fedadam_server_learning_rate,
            ),
            ("--fedadam-beta1", self.fedadam_beta1),
            ("--fedadam-beta2", self.fedadam_beta2),
            ("--fedadam-tau", self.fedadam_tau),
        ];
        let mut others: Vec<&str> = Vec::new();
        if self.strategy != StrategyName::Fedprox && self.fedprox_mu.is_some() {
            others.push("--fedprox-mu");
        }
        if self.strategy != StrategyName::Fedadam {
            others.extend(
                fedadam_flags
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(f, _)| *f),
            );
        }
        if !others.is_empty() {
            bail!(
                "{} apply to another strategy than --strategy {}",
                others.join(", "),
                self.strategy.as_str()
            );
        }
        let positive = |flag: &str, v: f64| -> anyhow::Result<f64> {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                bail!("{flag} must be a finite number at least 0, got {v}")
            }
        };
        let (lr, b1, b2, tau) = StrategyConfig::DEFAULT_FEDADAM;
        Ok(match self.strategy {
            StrategyName::Fedavg => StrategyConfig::FedAvg,
            StrategyName::Fedprox => StrategyConfig::FedProx {
                mu: positive(
                    "--fedprox-mu",
                    self.fedprox_mu.unwrap_or(StrategyConfig::DEFAULT_MU),
                )?,
            },
            StrategyName::Fedadam => {
                let beta = |flag: &str, v: f64| -> anyhow::Result<f64> {
                    if (0.0..1.0).contains(&v) {
                        Ok(v)
                    } else {
                        bail!("{flag} must be at least 0 and below 1, got {v}")
                    }
                };
                StrategyConfig::FedAdam {
                    server_learning_rate: positive(
                        "--fedadam-server-learning-rate",
                        self.fedadam_server_learning_rate.unwrap_or(lr),
                    )?,
                    beta1: beta("--fedadam-beta1", self.fedadam_beta1.unwrap_or(b1))?,
                    beta2: beta("--fedadam-beta2", self.fedadam_beta2.unwrap_or(b2))?,
                    tau: positive("--fedadam-tau", self.fedadam_tau.unwrap_or(tau))?,
                }
            }
        })
    }

    /// `--names`, checked (one per institution, distinct DNS labels, none
    /// of the output folder's own), or inst-0, inst-1, ...
    pub fn institution_names(&self) -> anyhow::Result<Vec<String>> {
        if self.names.is_empty() {
            return Ok((0..self.institutions)
                .map(|i| format!("inst-{i}"))
                .collect());
        }
        if self.names.len() != self.institutions {
            bail!(
                "--names gives {} names for --institutions {}",
                self.names.len(),
                self.institutions
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.names {
            if !modelpub_agent_config::names::is_dns_label(name) {
                bail!("--names: {name:?} is not a DNS label (a-z, 0-9 and '-', at most 63)");
            }
            if RESERVED_NAMES.contains(&name.as_str()) {
                bail!("--names: {name:?} is the name of one of simulate's own folders");
            }
            if !seen.insert(name) {
                bail!("--names: {name:?} appears twice");
            }
        }
        Ok(self.names.clone())
    }

    pub fn secure(&self) -> bool {
        self.secure_aggregation == "on"
    }
}

/// Where the data set comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    Digits,
    Shakespeare,
    Csv {
        path: PathBuf,
        label: Option<String>,
    },
    Text(PathBuf),
}

impl DataSource {
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        match spec {
            "digits" => return Ok(Self::Digits),
            "shakespeare" => return Ok(Self::Shakespeare),
            _ => {}
        }
        if let Some(rest) = spec.strip_prefix("csv:") {
            if rest.is_empty() {
                bail!("--data csv: needs a path, e.g. csv:data.csv:label");
            }
            // A path may itself contain ':'; only split off a label when the
            // whole rest is not an existing file.
            if Path::new(rest).is_file() {
                return Ok(Self::Csv {
                    path: rest.into(),
                    label: None,
                });
            }
            return Ok(match rest.rsplit_once(':') {
                Some((path, label)) if !label.is_empty() => Self::Csv {
                    path: path.into(),
                    label: Some(label.to_string()),
                },
                _ => Self::Csv {
                    path: rest.into(),
                    label: None,
                },
            });
        }
        if let Some(dir) = spec.strip_prefix("text:") {
            if dir.is_empty() {
                bail!("--data text: needs a directory, e.g. text:notes/");
            }
            return Ok(Self::Text(dir.into()));
        }
        bail!(
            "unknown --data `{spec}`; use digits, shakespeare, csv:PATH[:LABEL_COLUMN] or text:DIR"
        )
    }

    pub fn load(&self, data_dir: &Path) -> anyhow::Result<Dataset> {
        Ok(match self {
            Self::Digits => Dataset::Tabular(data::load_digits(data_dir)?),
            Self::Shakespeare => Dataset::Text(data::load_shakespeare(
                &data_dir.join("tinyshakespeare.txt"),
            )?),
            Self::Csv { path, label } => Dataset::Tabular(data::load_csv(path, label.as_deref())?),
            Self::Text(dir) => Dataset::Text(data::load_text_dir(dir)?),
        })
    }

    pub fn default_partition(&self) -> Partition {
        match self {
            Self::Digits | Self::Csv { .. } => Partition::Label,
            Self::Shakespeare | Self::Text(_) => Partition::Role,
        }
    }
}

/// The shipped data sets: an explicit folder, $MODELPUB_DATA_DIR, ./data, or
/// the repository this binary was built from.
pub fn find_data_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let has_data = |p: &Path| p.join("digits.csv.gz").is_file();
    if let Some(dir) = explicit {
        if !has_data(dir) {
            bail!("{} does not contain digits.csv.gz", dir.display());
        }
        return Ok(dir.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Ok(env) = std::env::var("MODELPUB_DATA_DIR") {
        candidates.push(PathBuf::from(env));
    }
    candidates.push(PathBuf::from("data"));
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"));
    candidates
        .into_iter()
        .find(|p| has_data(p))
        .context("cannot find the shipped data sets (digits.csv.gz); pass --data-dir or set MODELPUB_DATA_DIR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_source_form() {
        assert_eq!(DataSource::parse("digits").unwrap(), DataSource::Digits);
        assert_eq!(
            DataSource::parse("csv:x.csv:target").unwrap(),
            DataSource::Csv {
                path: "x.csv".into(),
                label: Some("target".into())
            }
        );
        assert_eq!(
            DataSource::parse("csv:x.csv").unwrap(),
            DataSource::Csv {
                path: "x.csv".into(),
                label: None
            }
        );
        assert_eq!(
            DataSource::parse("text:notes").unwrap(),
            DataSource::Text("notes".into())
        );
        let err = DataSource::parse("mnist").unwrap_err().to_string();
        assert!(err.contains("mnist"), "{err}");
    }

    #[test]
    fn strategy_knobs_are_taken_checked_and_refused_for_another_strategy() {
        use crate::config::StrategyConfig;
        let c = options(&["--strategy", "fedprox", "--fedprox-mu", "0.5"])
            .strategy_config()
            .unwrap();
        assert_eq!(c, StrategyConfig::FedProx { mu: 0.5 });
        let c = options(&["--strategy", "fedadam", "--fedadam-beta1", "0.5"])
            .strategy_config()
            .unwrap();
        assert_eq!(
            c,
            StrategyConfig::FedAdam {
                server_learning_rate: 0.03,
                beta1: 0.5,
                beta2: 0.99,
                tau: 1e-3
            }
        );
        assert_eq!(
            options(&[]).strategy_config().unwrap(),
            StrategyConfig::FedAvg
        );
        let e = options(&["--fedprox-mu", "0.5", "--fedadam-tau", "0.1"])
            .strategy_config()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--fedprox-mu, --fedadam-tau apply to another strategy than --strategy fedavg"
        );
        let e = options(&["--strategy", "fedadam", "--fedadam-beta2", "1"])
            .strategy_config()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--fedadam-beta2 must be at least 0 and below 1"),
            "{e}"
        );
        let e = options(&["--strategy", "fedprox", "--fedprox-mu=-1"])
            .strategy_config()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--fedprox-mu must be a finite number at least 0"),
            "{e}"
        );
    }

    fn options(args: &[&str]) -> SimulateOptions {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            opts: SimulateOptions,
        }
        let argv = std::iter::once("simulate").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().opts
    }

    #[test]
    fn participant_metrics_ports_count_up_from_the_first() {
        assert!(options(&[]).participant_metrics_addrs().unwrap().is_empty());
        assert_eq!(
            options(&["--participant-metrics-from", "127.0.0.1:9500"])
                .participant_metrics_addrs()
                .unwrap(),
            ["127.0.0.1:9500", "127.0.0.1:9501", "127.0.0.1:9502"]
        );
        for (flag, needle) in [
            ("localhost:9500", "not HOST:PORT with an IP address"),
            ("127.0.0.1:65534", "past 65535"),
            ("127.0.0.1:0", "from 0"),
        ] {
            let e = options(&["--participant-metrics-from", flag])
                .participant_metrics_addrs()
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{flag}: {e}");
        }
    }

    #[test]
    fn institutions_are_named_inst_n_or_as_given() {
        assert_eq!(
            options(&["--institutions", "2"])
                .institution_names()
                .unwrap(),
            ["inst-0", "inst-1"]
        );
        let named = options(&["--names", "hospital-a,hospital-b,hospital-c"]);
        assert_eq!(
            named.institution_names().unwrap(),
            ["hospital-a", "hospital-b", "hospital-c"]
        );
        for (args, needle) in [
            (vec!["--names", "a,b"], "2 names for --institutions 3"),
            (vec!["--names", "a,B,c"], "\"B\" is not a DNS label"),
            (vec!["--names", "a,b,a"], "\"a\" appears twice"),
            (vec!["--names", "a,testset,c"], "simulate's own folders"),
        ] {
            let err = options(&args).institution_names().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
