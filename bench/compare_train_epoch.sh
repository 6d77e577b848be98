#!/usr/bin/env bash
# Times one local training epoch in node-agent (Rust + tch) and in PyTorch
# eager Python, with the same thread count, and prints the ratio
# ours / PyTorch (below 1.0: we are faster).
#
# Usage: bench/compare_train_epoch.sh            (1 thread)
#        MODELPUB_BENCH_THREADS=2 bench/compare_train_epoch.sh
# PROFILE=dev uses the debug build instead of --release.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/env.sh
export MODELPUB_BENCH_THREADS="${MODELPUB_BENCH_THREADS:-1}"
export MODELPUB_BENCH_REPEATS="${MODELPUB_BENCH_REPEATS:-30}"
profile="${PROFILE:-release}"

cargo build -q --profile "$profile" -p modelpub-node-agent --example train_epoch_timing
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
ours="$("target/$dir/examples/train_epoch_timing")"
theirs="$(python bench/reference_train_epoch.py)"
echo "ours:    $ours"
echo "pytorch: $theirs"
python - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = (json.loads(a) for a in sys.argv[1:3])
for key in ("digits_mlp_epoch_s", "char_transformer_epoch_s"):
    print(f"{key}: ours {ours[key]*1e3:.3f} ms, pytorch {theirs[key]*1e3:.3f} ms, "
          f"ratio ours/pytorch {ours[key]/theirs[key]:.3f} "
          f"(threads {ours['threads']})")
PY
