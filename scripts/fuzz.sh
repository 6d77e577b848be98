#!/usr/bin/env bash
# The long fuzz run (issue 13): every decoder target of modelpub-fuzz for
# SECONDS in all (default 1800), from SEED (default: the current time, so
# each run explores new inputs; the seed is printed so a run can be
# repeated). Crashing inputs land in fuzz/crashes/<target>/; copy each into
# fuzz/regressions/<target>/ once it is fixed. CI runs a 60 s pass of the
# same binary (scripts/test.sh); docs/reliability.md has a measured run.
#
#   bash scripts/fuzz.sh [SECONDS] [SEED]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-1800}"
seed="${2:-$(date +%s)}"
scripts/setup.sh >/dev/null
. scripts/env.sh
cargo build --release -p modelpub-fuzz --bin modelpub-fuzz
echo "modelpub-fuzz: ${seconds} s over all targets, seed ${seed}, $(git rev-parse --short HEAD 2>/dev/null || echo unversioned)"
exec target/release/modelpub-fuzz --seconds "$seconds" --seed "$seed" --crashes fuzz/crashes
