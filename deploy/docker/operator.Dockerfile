# syntax=docker/dockerfile:1
# The ModelPub operator. Build from the repository root:
#   docker build -f deploy/docker/operator.Dockerfile -t ghcr.io/modelpub/modelpub-operator:0.1.0 .
# The operator never links libtorch, so the runtime is distroless with only
# glibc and libgcc (no shell, no package manager), running as nonroot.

FROM rust:1.90-bookworm AS builder
WORKDIR /src
# The whole workspace (what .dockerignore leaves): cargo loads every
# member's manifest even when it builds one package.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p modelpub-operator --bin modelpub-operator \
 && install -D -m 0755 target/release/modelpub-operator /out/modelpub-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="modelpub-operator" \
      org.opencontainers.image.source="https://github.com/modelpub/modelpub" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/modelpub-operator /usr/local/bin/modelpub-operator
# Matches the chart's pod securityContext (runAsUser 65532, runAsNonRoot).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/modelpub-operator"]
