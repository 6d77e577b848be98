#!/usr/bin/env bash
# Makes the base images the project's Dockerfiles start from available on a
# Docker engine that cannot pull them (no registry reachable, as on the
# project's CI machines). Each missing base is built locally and tagged
# with the official name, so deploy/docker/Dockerfile stays standard:
#
#   debian:bookworm-slim                     debootstrap (minbase) + docker import
#   rust:1.90-bookworm                       scripts/base-images/rust.Dockerfile
#   gcr.io/distroless/cc-debian12:nonroot    scripts/base-images/distroless-cc.Dockerfile
#
# A base that already exists (pulled, or built by an earlier run) is kept.
# Where a registry is reachable, pulling is tried first (MODELPUB_PULL_BASES=0
# skips that). Building debian:bookworm-slim needs root and debootstrap
# (installed from Debian's packages when missing).
# Usage: scripts/base-images.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Scratch folders (a rootfs, a build context) go even when a step fails.
scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT

have() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
  [ "${MODELPUB_PULL_BASES:-1}" = 1 ] || return 1
  timeout 60 docker pull --quiet "$1" >/dev/null 2>&1
}

ensure() {
  local image="$1" builder="$2"
  if have "$image"; then
    echo "base-images: $image present"
  elif try_pull "$image"; then
    echo "base-images: $image pulled"
  else
    echo "base-images: $image not pullable here; building it locally ($builder)"
    "$builder" "$image"
  fi
}

debian_slim() {
  local image="$1"
  if [ "$(id -u)" != 0 ]; then
    echo "base-images: building $image needs root (debootstrap); run as root or pull it" >&2
    exit 1
  fi
  if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local rootfs
  rootfs="$(mktemp -d /tmp/modelpub-rootfs.XXXXXX)"
  scratch+=("$rootfs")
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" \
    "${MODELPUB_DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; echo "base-images: debootstrap failed (log: $rootfs.log)" >&2; exit 1; }
  rm -f "$rootfs.log"
  # What the official slim image drops: package lists, docs, man pages.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$image" >/dev/null
}

dockerfile_base() {
  local image="$1" file
  case "$image" in
    rust:*) file=scripts/base-images/rust.Dockerfile ;;
    gcr.io/distroless/cc-*) file=scripts/base-images/distroless-cc.Dockerfile ;;
  esac
  local ctx
  ctx="$(mktemp -d /tmp/modelpub-base-ctx.XXXXXX)"
  scratch+=("$ctx")
  mkdir -p "$ctx/extra-ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/extra-ca-certificates/" 2>/dev/null || true
  local args=()
  case "$image" in rust:*) args=(--build-arg "RUST_VERSION=$(rust_version "$image")") ;; esac
  docker build --quiet "${args[@]}" -f "$file" -t "$image" "$ctx" >/dev/null
}

# rust:1.90-bookworm -> 1.90.0 (rustup wants a full version or a channel).
rust_version() {
  local v="${1#rust:}"
  v="${v%%-*}"
  case "$v" in *.*.*) echo "$v" ;; *) echo "$v.0" ;; esac
}

if ! docker info >/dev/null 2>&1; then
  echo "base-images: no Docker engine answers (docker info failed)" >&2
  exit 1
fi
ensure debian:bookworm-slim debian_slim
ensure rust:1.90-bookworm dockerfile_base
ensure gcr.io/distroless/cc-debian12:nonroot dockerfile_base
