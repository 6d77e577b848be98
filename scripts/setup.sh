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

if .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.__version__.split("+")[0] == "2.13.0" else 1)' 2>/dev/null; then
  echo "setup: PyTorch 2.13.0 already in .venv"
else
  echo "setup: installing PyTorch 2.13.0 into .venv (one time, a few minutes)"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
