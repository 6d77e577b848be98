#!/usr/bin/env bash
# Builds the two images the chart runs, smoke-tests them the way the chart
# runs them (uid 65532, read-only root filesystem), and optionally pushes
# them to your registry.
#
#   scripts/images.sh                         build + smoke-test, tags ghcr.io/modelpub/*:<chart appVersion>
#   scripts/images.sh --registry REG --push   build, test, push REG/modelpub-operator and REG/modelpub-node-agent
#
# Options:
#   --registry REG   image name prefix (default ghcr.io/modelpub)
#   --tag TAG        image tag (default: the chart's appVersion)
#   --push           docker push both images after the smoke tests pass
#   --only NAME      build only `operator` or `node-agent`
#   --no-smoke       skip the smoke tests
# Environment: TORCH_INDEX (node-agent wheel index, default PyPI's CUDA
# build; https://download.pytorch.org/whl/cpu for a CPU-only image).
#
# Base images a Docker engine cannot pull are built locally first
# (scripts/base-images.sh). Build logs go to target/images/<name>.log; the
# console shows each Dockerfile step as it starts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

registry=ghcr.io/modelpub
tag="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/modelpub/Chart.yaml)"
push=0
smoke=1
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="${2:?--registry needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --push) push=1; shift ;;
    --only)
      only="${2:?--only needs operator or node-agent}"
      case "$only" in operator|node-agent) ;; *) echo "images: --only takes operator or node-agent, not '$only'" >&2; exit 2 ;; esac
      shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "images: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$tag" ] || { echo "images: no appVersion in charts/modelpub/Chart.yaml; pass --tag" >&2; exit 2; }

if ! out="$(docker info 2>&1 >/dev/null)"; then
  echo "images: no Docker engine answers here (docker info: ${out##*$'\n'})." >&2
  echo "images: build the images on a machine with Docker, push them to your registry," >&2
  echo "images: and set operator.image.repository / nodeAgent.image.repository (README, 'On a cluster')." >&2
  exit 1
fi

bash scripts/base-images.sh
mkdir -p target/images

build() {
  local name="$1" image="$2" log="target/images/$1.log" start=$SECONDS
  local args=()
  # Both targets share the builder stage: the same build arguments for both
  # keep it one cached build.
  if [ -n "${TORCH_INDEX:-}" ]; then
    args=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
  fi
  echo "== building $image (deploy/docker/Dockerfile, target $name; log: $log)"
  # Progress: the classic builder's "Step i/n" per instruction, and within
  # the long steps cargo's workspace crates and pip's result.
  set +e
  docker build "${args[@]}" -f deploy/docker/Dockerfile --target "$name" -t "$image" . 2>&1 \
    | tee "$log" \
    | awk '{ gsub(/\033\[[0-9;]*m/, "") }
           /^Step [0-9]+\/[0-9]+ : /                 { print "   " substr($0, 1, 100); fflush() }
           /^ *(Compiling modelpub|Finished|Successfully installed)/ { sub(/^ +/, ""); print "     " substr($0, 1, 98); fflush() }'
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    echo "images: building $image failed (docker build exit $rc); the end of $log:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  echo "   built $image in $((SECONDS - start)) s, $(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
}

# The chart's pod securityContext: runAsUser 65532, readOnlyRootFilesystem, an emptyDir on /tmp.
run_as_chart() { docker run --rm --read-only --tmpfs /tmp:rw,exec,size=512m --user 65532:65532 "$@"; }

smoke_operator() {
  local image="$1"
  echo "== smoke test $image"
  run_as_chart "$image" --version
  # Distroless: no shell to exec into.
  if docker run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
    echo "images: $image has a shell; the runtime should be distroless" >&2; exit 1
  fi
}

smoke_node_agent() {
  local image="$1"
  echo "== smoke test $image"
  run_as_chart "$image" --version
  if docker run --rm --entrypoint /bin/sh "$image" -c 'command -v python3 || command -v pip || command -v cc' >/dev/null 2>&1; then
    echo "images: $image carries python, pip or a compiler; the runtime stage should not" >&2; exit 1
  fi
  # A short federation on the image's own data sets: aggregator and three
  # participants as processes in one container, secure aggregation on.
  run_as_chart "$image" simulate --rounds 2 --skip-local-only --out /tmp/out \
    | tail -5
}

names=(operator node-agent)
[ -n "$only" ] && names=("$only")
built=()
for name in "${names[@]}"; do
  image="$registry/modelpub-$name:$tag"
  build "$name" "$image"
  built+=("$image")
done
if [ "$smoke" = 1 ]; then
  for image in "${built[@]}"; do
    case "$image" in
      */modelpub-operator:*) smoke_operator "$image" ;;
      */modelpub-node-agent:*) smoke_node_agent "$image" ;;
    esac
  done
fi
if [ "$push" = 1 ]; then
  for image in "${built[@]}"; do
    echo "== docker push $image"
    docker push "$image"
  done
fi
echo "images: ready:"
for image in "${built[@]}"; do echo "  $image"; done
[ "$push" = 1 ] || echo "images: push them with --push --registry REG and install with --set operator.image.repository=REG/modelpub-operator --set nodeAgent.image.repository=REG/modelpub-node-agent"
