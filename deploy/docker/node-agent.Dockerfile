# syntax=docker/dockerfile:1
# The ModelPub node-agent (`modelpub`: aggregator, participant, simulate),
# linked against the CUDA build of libtorch from the PyTorch 2.13.0 wheel,
# as scripts/setup.sh does on a workstation. Build from the repository root:
#   docker build -f deploy/docker/node-agent.Dockerfile -t ghcr.io/modelpub/modelpub-node-agent:0.1.0 .
# Running on a GPU needs the NVIDIA container runtime on the node; without a
# GPU the same image trains on the CPU.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

# --- PyTorch (libtorch with CUDA) in a virtualenv, shared by both stages.
FROM ${CUDA_IMAGE} AS torch
ARG TORCH_VERSION
ARG TORCH_INDEX
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

# --- Build `modelpub` against that libtorch (LIBTORCH_USE_PYTORCH=1).
FROM torch AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential ca-certificates curl pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:/opt/venv/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain 1.90.0
WORKDIR /src
# The whole workspace (what .dockerignore leaves): cargo loads every
# member's manifest even when it builds one package.
COPY . .
ENV LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV=/opt/venv
RUN --mount=type=cache,target=/opt/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p modelpub-node-agent --bin modelpub \
 && install -D -m 0755 target/release/modelpub /out/modelpub

# --- Runtime: CUDA runtime + the venv's torch/lib, no compiler, non-root.
FROM torch AS runtime
LABEL org.opencontainers.image.title="modelpub-node-agent" \
      org.opencontainers.image.source="https://github.com/modelpub/modelpub" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG PYTHON_SITE=/opt/venv/lib/python3.12/site-packages
ENV LD_LIBRARY_PATH=${PYTHON_SITE}/torch/lib:${PYTHON_SITE}/nvidia/cudnn/lib:${PYTHON_SITE}/nvidia/cublas/lib:/usr/local/cuda/lib64 \
    MODELPUB_DATA_DIR=/usr/share/modelpub/data
COPY --from=builder /out/modelpub /usr/local/bin/modelpub
# The small public data sets `modelpub simulate` and the demos use.
COPY data /usr/share/modelpub/data
RUN groupadd --gid 65532 modelpub \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin modelpub \
 && /usr/local/bin/modelpub --version
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modelpub"]
