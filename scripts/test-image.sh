#!/usr/bin/env bash
# Builds the image the Docker tests run workspaces in, with no registry: a Debian base made by
# debootstrap and imported (outpost-test-base:HASH), then templates/docker/Dockerfile on top of
# it (outpost-test-dev:HASH). Both are cached by a tag that hashes their inputs, so a warm run
# pays nothing. Prints the image's tag.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="bash,ca-certificates,curl,git,sudo,locales,procps,openssh-client,python3,less"
SUITE=bookworm
MIRROR=${OUTPOST_DEBIAN_MIRROR:-http://deb.debian.org/debian}

base_hash=$(printf '%s %s' "$PACKAGES" "$SUITE" | sha256sum | cut -c1-12)
base="outpost-test-base:$base_hash"
dev_hash=$(cat templates/docker/Dockerfile templates/docker/setup.sh | sha256sum | cut -c1-12)
dev="outpost-test-dev:$base_hash-$dev_hash"

if docker image inspect "$dev" >/dev/null 2>&1; then
  echo "$dev"
  exit 0
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    echo "test-image: installing debootstrap (apt-get)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  root=$(mktemp -d /tmp/outpost-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "test-image: debootstrap $SUITE into $root (a minute or two, once)" >&2
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 ||
    { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import - "$base" >/dev/null
fi
echo "test-image: building templates/docker/Dockerfile on $base" >&2
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$base" -t "$dev" templates/docker >/dev/null 2>&1 ||
  DOCKER_BUILDKIT=0 docker build --build-arg BASE="$base" -t "$dev" templates/docker >&2
echo "$dev"
