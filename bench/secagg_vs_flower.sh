#!/usr/bin/env bash
# Secure aggregation, ours against Flower 1.42's SecAgg+ primitives on the
# same work, one after the other in one command (docs/benchmarks.md,
# "Secure aggregation against Flower"):
#   bench/secagg_vs_flower.sh [N M DROPOUT K PRG]  (default 100 1000000 0.1 56,
#                                                   PRG: this CPU's fastest)
# Runs `modelpub bench secagg` (release build) at N participants, M words,
# the dropout fraction and K neighbours, then bench/flower_secagg.py with
# the mask counts our round needed, and prints both reports and the ratios
# (Flower's time / ours) as one JSON object on the last line.
# Flower lives in its own virtualenv, .venv-flower (flwr==1.42.0 from PyPI).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n="${1:-100}" m="${2:-1000000}" dropout="${3:-0.1}" k="${4:-56}" prg="${5:-}"

if ! .venv-flower/bin/python -c 'import flwr, sys; sys.exit(flwr.__version__ != "1.42.0")' 2>/dev/null; then
  echo "secagg-vs-flower: installing flwr 1.42.0 into .venv-flower (one time)" >&2
  python3 -m venv .venv-flower
  .venv-flower/bin/pip install --quiet --disable-pip-version-check "flwr==1.42.0"
fi
[ -d .venv ] || scripts/setup.sh
. scripts/env.sh
echo "secagg-vs-flower: building target/release/modelpub" >&2
cargo build --release --quiet --bin modelpub

echo "secagg-vs-flower: ours, n=$n m=$m dropout=$dropout k=$k ${prg:+prg=$prg}" >&2
ours="$(target/release/modelpub bench secagg --participants "$n" --params "$m" \
  --dropout "$dropout" --neighbours "$k" ${prg:+--prg "$prg"})"
echo "$ours"
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$ours" "$1"; }
client_masks="$(python3 -c 'import json, sys; print(round(json.loads(sys.argv[1])["client_masks"]))' "$ours")"

echo "secagg-vs-flower: Flower $(.venv-flower/bin/python -c 'import flwr; print(flwr.__version__)'), the same mask counts" >&2
flower="$(.venv-flower/bin/python bench/flower_secagg.py --params "$m" \
  --client-masks "$client_masks" --survivors "$(field survivors)" --dropped "$(field dropped)" \
  --server-masks "$(field server_masks)" --threshold "$(field threshold)")"
echo "$flower"
python3 - "$ours" "$flower" <<'PY'
import json, sys
ours, flower = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "participants": ours["participants"], "vector_len": ours["vector_len"],
    "dropout": ours["dropout"], "neighbours": ours["neighbours"], "prg": ours["prg"],
    "ours_server_unmask_seconds": ours["server_unmask_seconds"],
    "flower_server_unmask_seconds": flower["server_unmask_seconds"],
    "flower_server_reconstruct_seconds": flower["server_reconstruct_seconds"],
    "server_speedup": flower["server_unmask_seconds"] / ours["server_unmask_seconds"],
    "ours_client_mask_seconds": ours["client_mask_seconds"],
    "flower_client_mask_seconds": flower["client_mask_seconds"],
    "client_speedup": flower["client_mask_seconds"] / ours["client_mask_seconds"],
    "correct": ours["correct"],
}))
PY
