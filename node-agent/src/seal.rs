//! `modelpub vault seal`: seals one share of a data set into a vault, the
//! way `modelpub simulate` deals a data set across institutions. In a
//! cluster an init container runs it so each participant's vault holds its
//! share of a shipped demo data set, and the aggregator's holds the
//! held-out test split. The split and the partition depend only on the
//! data set and `--seed`, so parties sealing separately get disjoint
//! shares and the test split is held out from all of them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::data::{self, Dataset, Partition};
use crate::simulate::options::{DataSource, find_data_dir};
use crate::vault::{Vault, VaultKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    Digits,
    Shakespeare,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The training split, dealt across `--of` parts.
    Train,
    /// The held-out test split (an evaluation set).
    Test,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SealOptions {
    #[arg(long, value_enum)]
    pub dataset: DatasetName,
    /// The CSV file, for `--dataset csv`.
    #[arg(long)]
    pub csv_file: Option<PathBuf>,
    /// The CSV label column (default: the last).
    #[arg(long)]
    pub label_column: Option<String>,
    #[arg(long, value_enum, default_value = "train")]
    pub split: Split,
    /// label | role | iid | dirichlet:ALPHA (default: label for tables, role for text).
    #[arg(long)]
    pub partition: Option<String>,
    /// Which share of the training split, from 0.
    #[arg(long)]
    pub part: Option<usize>,
    /// How many shares the training split is dealt into.
    #[arg(long)]
    pub of: Option<usize>,
    /// The vault key (64 hex digits), e.g. a mounted Secret.
    #[arg(long)]
    pub key_file: PathBuf,
    /// The vault directory to create (absent or empty).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of the whole data set held out for testing (default 0.2
    /// for tables, 0.1 for text, as in `simulate`).
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// Folder holding digits.csv.gz and tinyshakespeare.txt (default:
    /// $MODELPUB_DATA_DIR, ./data, or the source tree).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// What was sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub examples: usize,
    pub describe: String,
}

fn source(opts: &SealOptions) -> anyhow::Result<DataSource> {
    Ok(match opts.dataset {
        DatasetName::Digits => DataSource::Digits,
        DatasetName::Shakespeare => DataSource::Shakespeare,
        DatasetName::Csv => DataSource::Csv {
            path: opts
                .csv_file
                .clone()
                .context("--dataset csv needs --csv-file PATH")?,
            label: opts.label_column.clone(),
        },
    })
}

/// Which share to seal, checked before any data is read.
fn share(opts: &SealOptions) -> anyhow::Result<Option<(usize, usize)>> {
    match (opts.split, opts.part, opts.of) {
        (Split::Test, None, None) => Ok(None),
        (Split::Test, _, _) => bail!("--part and --of apply to --split train, not test"),
        (Split::Train, Some(part), Some(of)) => {
            if of == 0 {
                bail!("--of must be at least 1");
            }
            if part >= of {
                bail!(
                    "--part {part} is out of range: the {of} parts of --of {of} are numbered 0 to {}",
                    of - 1
                );
            }
            Ok(Some((part, of)))
        }
        (Split::Train, _, _) => bail!("--split train needs --part I and --of N"),
    }
}

pub fn run(opts: &SealOptions) -> anyhow::Result<Sealed> {
    let source = source(opts)?;
    let share = share(opts)?;
    let partition: Partition = match &opts.partition {
        Some(p) => p.parse()?,
        None => source.default_partition(),
    };
    // Read the key first: a missing key must fail before minutes of work.
    let key = VaultKey::load(&opts.key_file).map_err(|e| anyhow::anyhow!("--key-file: {e}"))?;
    check_out(&opts.out)?;
    let data_dir = match source {
        DataSource::Digits | DataSource::Shakespeare => find_data_dir(opts.data_dir.as_deref())?,
        _ => PathBuf::new(),
    };
    let whole = source.load(&data_dir)?;
    let test_fraction = opts.test_fraction.unwrap_or(match whole {
        Dataset::Tabular(_) => 0.2,
        Dataset::Text(_) => 0.1,
    });
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        bail!("--test-fraction must be between 0 and 1, got {test_fraction}");
    }
    let (train, test) = data::split_train_test(&whole, test_fraction, opts.seed)?;
    let chosen = match share {
        None => test,
        Some((part, of)) => data::partition(&train, of, &partition, opts.seed)?
            .into_iter()
            .nth(part)
            .with_context(|| format!("the partition produced no part {part}"))?,
    };
    if chosen.is_empty() {
        bail!("the chosen share is empty; use fewer --of parts or another --partition");
    }
    let vault = Vault::create(&opts.out, key)?;
    vault.put("dataset", &data::encode_dataset(&chosen))?;
    Ok(Sealed {
        examples: chosen.len(),
        describe: chosen.describe(),
    })
}

fn check_out(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("--out {}", out.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "--out {} exists and is not empty; a vault is sealed once",
                out.display()
            );
        }
    }
    Ok(())
}
