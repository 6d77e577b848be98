#!/usr/bin/env bash
# Sets up, builds and runs `modelpub simulate` (arguments are passed on).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
. scripts/env.sh
cargo build --release --bin modelpub
exec target/release/modelpub simulate "$@"
