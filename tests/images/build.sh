#!/usr/bin/env bash
# Build the local test images llmlab-test/debian:<release> without a registry:
# debootstrap (minbase) -> docker import -> a systemd layer (Dockerfile).
# An image is rebuilt only when its recipe (this script + Dockerfile) changes:
# the recipe hash is stored in the image label llmlab.recipe.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mirror="${LLMLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
declare -A suites=([12]=bookworm [13]=trixie)
releases=("${@:-12 13}")
# shellcheck disable=SC2206
releases=(${releases[*]})

recipe_hash="$(cat "$here/build.sh" "$here/Dockerfile" | sha256sum | cut -c1-16)"

for release in "${releases[@]}"; do
  suite="${suites[$release]:?unknown Debian release '$release' (valid: ${!suites[*]})}"
  image="llmlab-test/debian:$release"
  current="$(docker image inspect -f '{{index .Config.Labels "llmlab.recipe"}}' "$image" 2>/dev/null || true)"
  if [[ "$current" == "$recipe_hash" ]]; then
    echo "images: $image is up to date (recipe $recipe_hash)"
    continue
  fi
  echo "images: building $image from $suite (recipe $recipe_hash)"
  rootfs="$(mktemp -d /var/tmp/llmlab-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  tar -C "$rootfs" -c . | docker import - "llmlab-test/debian-rootfs:$release" > /dev/null
  rm -rf "$rootfs"
  docker build -q --build-arg "BASE=llmlab-test/debian-rootfs:$release" \
    --label "llmlab.recipe=$recipe_hash" -t "$image" "$here" > /dev/null
  echo "images: built $image"
done
