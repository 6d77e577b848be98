//! `modelpub`: the node-agent binary and the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use modelpub_node_agent::party::PartyDir;
use modelpub_node_agent::seal::SealOptions;
use modelpub_node_agent::simulate::options::SimulateOptions;
use modelpub_node_agent::telemetry::tracing_export::{self, OtlpExport};
use modelpub_node_agent::{aggregator, participant, simulate};
use modelpub_protocol::dp;

#[derive(Parser)]
#[command(
    name = "modelpub",
    version,
    about = "Federated, privacy-preserving AI between institutions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole federation on this machine, one process per party.
    Simulate(Box<SimulateOptions>),
    /// Serve the aggregator role from a party directory.
    Aggregator(RoleOptions),
    /// Serve the participant role from a party directory.
    Participant(RoleOptions),
    /// Personal Vaults.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Train one institution alone (the local-only baseline).
    TrainLocal {
        #[arg(long)]
        config: PathBuf,
    },
    /// Plan differential privacy: ε for a noise level, or the noise for an ε.
    Privacy {
        #[command(subcommand)]
        command: PrivacyCommand,
    },
    /// Plan secure aggregation: the neighbours and threshold a roster gets.
    Secagg {
        #[command(subcommand)]
        command: SecaggCommand,
    },
    /// Size a deployment: measure one protocol step on this machine.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Audit logs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Where a role's files are. In a pod, `--config` and `--secrets` point
/// at read-only mounts that are copied into the writable `--dir`.
#[derive(clap::Args)]
struct RoleOptions {
    /// The party directory (writable): audit log, rounds, global model.
    #[arg(long)]
    dir: PathBuf,
    /// A config.json to copy into DIR (e.g. a mounted ConfigMap).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A directory with identity.key, identity.pub, ca.crt, tls.crt and
    /// tls.key to copy into DIR (e.g. a mounted Secret).
    #[arg(long)]
    secrets: Option<PathBuf>,
}

impl RoleOptions {
    fn party(&self) -> anyhow::Result<PartyDir> {
        modelpub_node_agent::pod_mode::prepare(
            &self.dir,
            self.config.as_deref(),
            self.secrets.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Seal a share of a data set into a new vault (what `simulate` gives
    /// each institution; an init container in a cluster).
    Seal(Box<SealOptions>),
}

#[derive(Subcommand)]
enum PrivacyCommand {
    /// The (ε, δ) that R rounds of DP-FedAvg spend (RDP accountant, Poisson-subsampled Gaussian).
    Epsilon {
        /// Fraction of institutions sampled each round (1 when all take part).
        #[arg(long)]
        sampling_rate: f64,
        /// Noise standard deviation divided by the clipping norm.
        #[arg(long)]
        noise_multiplier: f64,
        #[arg(long)]
        rounds: u64,
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
    },
    /// The smallest noise multiplier that keeps R rounds within (ε, δ).
    Noise {
        #[arg(long)]
        sampling_rate: f64,
        #[arg(long)]
        rounds: u64,
        #[arg(long)]
        epsilon: f64,
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
    },
}

#[derive(Subcommand)]
enum SecaggCommand {
    /// k and t derived from Bell et al.'s conditions (docs/secagg.md), with
    /// the bounds they achieve: one Markdown table row per roster size.
    Neighbours {
        /// Roster sizes, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        participants: Vec<usize>,
        /// Fraction that may drop out between sharing keys and unmasking.
        #[arg(long, default_value_t = modelpub_protocol::secagg::neighbourhood::Tolerance::DEFAULT.dropout)]
        dropout: f64,
        /// Fraction that may collude with the aggregator.
        #[arg(long, default_value_t = modelpub_protocol::secagg::neighbourhood::Tolerance::DEFAULT.corruption)]
        corruption: f64,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// One full secure-aggregation round in memory (all parties, real
    /// crypto); prints JSON with masking and unmasking times, the keystream
    /// bound they are measured against, and bytes per participant.
    Secagg {
        #[arg(long, default_value_t = 10)]
        participants: usize,
        /// Model parameters (vector length).
        #[arg(long, default_value_t = 100_000)]
        params: usize,
        /// Fraction of participants that drop out.
        #[arg(long, default_value_t = 0.0)]
        dropout: f64,
        /// Neighbours per participant, k (default: derived, see `modelpub
        /// secagg neighbours`); even, or n − 1 for the complete graph.
        #[arg(long, value_name = "K")]
        neighbours: Option<usize>,
        /// Threads masking and unmasking may use (default: every core this
        /// process may use); the sum is the same for any count.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        /// Mask PRG: aes-128-ctr or chacha20 (default: aes-128-ctr where
        /// this CPU has AES instructions, else chacha20).
        #[arg(long, value_name = "PRG", value_parser = ["aes-128-ctr", "chacha20"])]
        prg: Option<String>,
        /// Seed of the round's inputs, keys and dropouts.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a party's hash-chained, signed audit log and name the first bad entry.
    Verify {
        /// The party directory holding audit.log and identity.pub.
        dir: PathBuf,
        /// Pin the signer's key (an identity.pub file) instead of trusting the one in DIR.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it flushes the spans still queued.
    let _otlp = match init_logging() {
        Ok(export) => export,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", modelpub_node_agent::cli_error::describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    if let Some(n) = std::env::var(modelpub_agent_config::pod::TORCH_THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        tch::set_num_threads(n);
    }
    match command {
        Command::Simulate(opts) => {
            let report = runtime()?.block_on(simulate::run((*opts).clone()))?;
            println!("{}", simulate::report::table(&report));
            eprintln!(
                "report: {0}/report.json and {0}/report.svg ({1:.1} s)",
                opts.out.display(),
                report.seconds
            );
            Ok(())
        }
        Command::Aggregator(role) => runtime()?.block_on(aggregator::run(role.party()?)),
        Command::Participant(role) => runtime()?.block_on(participant::run(role.party()?)),
        Command::Vault {
            command: VaultCommand::Seal(opts),
        } => {
            let sealed = modelpub_node_agent::seal::run(&opts)?;
            println!(
                "sealed {} examples ({}) into {}",
                sealed.examples,
                sealed.describe,
                opts.out.display()
            );
            Ok(())
        }
        Command::TrainLocal { config } => simulate::train_local(&config),
        Command::Privacy { command } => {
            let line = match command {
                PrivacyCommand::Epsilon {
                    sampling_rate,
                    noise_multiplier,
                    rounds,
                    delta,
                } => dp::describe_epsilon(sampling_rate, noise_multiplier, rounds, delta)?,
                PrivacyCommand::Noise {
                    sampling_rate,
                    rounds,
                    epsilon,
                    delta,
                } => dp::describe_noise(sampling_rate, rounds, epsilon, delta)?,
            };
            println!("{line}");
            Ok(())
        }
        Command::Secagg {
            command:
                SecaggCommand::Neighbours {
                    participants,
                    dropout,
                    corruption,
                },
        } => {
            use modelpub_protocol::secagg::neighbourhood::{self, Tolerance};
            let tolerance = Tolerance {
                dropout,
                corruption,
            };
            let bits = |x: f64| {
                if x == f64::NEG_INFINITY {
                    "0 (impossible)".to_string()
                } else {
                    format!("2^{x:.1}")
                }
            };
            println!(
                "{:.0} % dropout, {:.0} % corruption; bounds: privacy and partial sums 2^-{}, round failure 2^-{}",
                dropout * 100.0,
                corruption * 100.0,
                neighbourhood::SECURITY_BITS,
                neighbourhood::CORRECTNESS_BITS
            );
            println!("\n| n | k | t | privacy failure | partial sum | round failure |");
            println!("| --- | --- | --- | --- | --- | --- |");
            for n in participants {
                let c = neighbourhood::choose(n, tolerance)?;
                println!(
                    "| {n} | {} | {} | {} | {} | {} |",
                    c.neighbours,
                    c.threshold,
                    bits(c.log2_privacy_failure),
                    bits(c.log2_partial_sum),
                    bits(c.log2_round_failure)
                );
            }
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Secagg {
                    participants,
                    params,
                    dropout,
                    neighbours,
                    threads,
                    prg,
                    seed,
                },
        } => {
            if !(0.0..1.0).contains(&dropout) {
                anyhow::bail!("--dropout must be at least 0 and below 1, got {dropout}");
            }
            let prg = prg
                .as_deref()
                .map(modelpub_protocol::secagg::MaskPrg::from_name)
                .transpose()?;
            let report = modelpub_protocol::secagg::bench::bench_round(
                &modelpub_protocol::secagg::bench::BenchRound {
                    participants,
                    vector_len: params,
                    dropout,
                    neighbours,
                    threads: threads.map(usize::from),
                    prg,
                    seed,
                },
            )?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { dir, public_key },
        } => {
            let pinned = public_key
                .map(|p| modelpub_protocol::identity::PublicIdentity::load(&p))
                .transpose()?;
            let report = modelpub_protocol::audit::verify(&dir, pinned.as_ref())?;
            println!(
                "{}: {} entries, chain intact, all signed by {} ({})",
                dir.join("audit.log").display(),
                report.entries,
                report.signer.name,
                report.signer.fingerprint()
            );
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Logs to stderr, and spans over OTLP when an endpoint is configured.
fn init_logging() -> Result<Option<OtlpExport>, tracing_export::ExportError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let export = match tracing_export::endpoint_from_env()? {
        Some(endpoint) => Some(OtlpExport::start(&endpoint, "modelpub-node-agent")?),
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::env::var_os("MODELPUB_LOG_FORMAT").is_none()),
        )
        .with(export.as_ref().map(|e| e.layer()))
        .init();
    Ok(export)
}
