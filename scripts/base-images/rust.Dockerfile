# A local stand-in for the official `rust:1.90-bookworm` image, for machines
# that build the project's images without reaching Docker Hub
# (scripts/base-images.sh tags it under that name, so the project's
# Dockerfiles stay standard). It follows the official image's layout:
# rustup's toolchain in /usr/local/rustup, cargo in /usr/local/cargo/bin on
# PATH, the C toolchain and curl from Debian.
FROM debian:bookworm-slim
ARG RUST_VERSION=1.90.0
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential ca-certificates curl git pkg-config python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# Certificate authorities the build machine's egress presents (empty where
# it presents none): cargo, pip and rustup fetch through it.
COPY extra-ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN curl --proto '=https' --tlsv1.2 -sSf -o /tmp/rustup-init \
      https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
 && chmod +x /tmp/rustup-init \
 && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}" \
 && rm /tmp/rustup-init \
 && chmod -R a+w "${RUSTUP_HOME}" "${CARGO_HOME}" \
 && rustc --version && cargo --version
