//! `modelpub-fuzz`: runs every decoder target (or those named) for a fixed
//! time, prints what each did, saves crashing inputs and exits 1 if any.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use modelpub_fuzz::run::{Budget, fuzz};
use modelpub_fuzz::targets;
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(
    name = "modelpub-fuzz",
    about = "Mutation-fuzz every decoder of network and disk input for a fixed time"
)]
struct Args {
    /// Total seconds, shared equally by the targets.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only these targets (repeatable); all when absent.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Seed of the mutations, so a run can be repeated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where crashing inputs go, one folder per target.
    #[arg(long, default_value = "fuzz/crashes")]
    crashes: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut all = targets::all()?;
    let known = targets::names()?;
    for t in &args.targets {
        anyhow::ensure!(
            known.contains(&t.as_str()),
            "unknown target {t:?}; the targets are {}",
            known.join(", ")
        );
    }
    all.retain(|t| args.targets.is_empty() || args.targets.iter().any(|n| n == t.name()));
    let each = Duration::from_secs_f64(args.seconds as f64 / all.len() as f64);
    // Panics are what we look for: report them in the table, not as noise.
    std::panic::set_hook(Box::new(|_| {}));
    println!(
        "{:<16} {:>10} {:>9} {:>9} {:>6} {:>8} {:>8}",
        "target", "inputs", "accepted", "refused", "kinds", "crashes", "seconds"
    );
    let mut crashed = 0;
    for target in &mut all {
        let started = Instant::now();
        let out = fuzz(target.as_mut(), Budget::Time(each), args.seed);
        println!(
            "{:<16} {:>10} {:>9} {:>9} {:>6} {:>8} {:>8.1}",
            target.name(),
            out.iterations,
            out.accepted,
            out.refused,
            out.refusal_kinds,
            out.crashes.len(),
            started.elapsed().as_secs_f64()
        );
        for crash in &out.crashes {
            crashed += 1;
            let dir = args.crashes.join(target.name());
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let name = hex::encode(&Sha256::digest(&crash.input)[..8]);
            let path = dir.join(format!("{name}.bin"));
            std::fs::write(&path, &crash.input)
                .with_context(|| format!("cannot write {}", path.display()))?;
            std::fs::write(dir.join(format!("{name}.txt")), &crash.message)?;
            println!("  crash: {} ({})", crash.message, path.display());
        }
    }
    if crashed > 0 {
        anyhow::bail!(
            "{crashed} crash(es); each input is saved under {}: move it to fuzz/regressions/<target>/ once fixed",
            args.crashes.display()
        );
    }
    println!("no crashes (seed {})", args.seed);
    Ok(())
}
