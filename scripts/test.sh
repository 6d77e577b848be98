#!/usr/bin/env bash
# Sets up and runs the whole test suite: formatting, lints, unit and
# integration tests, and the end-to-end suites against the built binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
. scripts/env.sh
echo "== security scan (checkov on the rendered chart, docs/security.md)"
bash scripts/security-scan.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (binaries the end-to-end suites run)"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace -- --test-threads=2
echo "== fuzz: 60 s over every decoder (the long run is scripts/fuzz.sh)"
fuzz_seed="${MODELPUB_FUZZ_SEED:-$(date +%s)}"
echo "fuzz seed ${fuzz_seed} (MODELPUB_FUZZ_SEED=${fuzz_seed} repeats this pass)"
target/debug/modelpub-fuzz --seconds 60 --seed "$fuzz_seed" --crashes target/fuzz-crashes
echo "== images (scripts/images.sh: build both, run them as the chart does)"
case "${MODELPUB_IMAGES:-auto}" in
  off) echo "images: skipped (MODELPUB_IMAGES=off)" ;;
  *)
    if docker info >/dev/null 2>&1; then
      bash scripts/images.sh
    else
      echo "images: SKIPPED: no Docker engine answers here (docker info failed); the images were not built" >&2
    fi ;;
esac
