#!/usr/bin/env bash
# make image: the worker and triton-cpu images, built here with Debian's buildah (chroot
# isolation, no container engine). Tags localhost/moderation-<target>:<version>.
#
# No registry is reachable here, so when the base image the Dockerfile names is missing it
# is made from Debian packages (mmdebstrap, Debian 12 minbase: what debian:bookworm-slim
# is) and tagged with that name. PIP_CERT (a CA bundle, as behind a TLS-intercepting
# proxy) goes in as the build secret `ca`; PIP_FIND_LINKS (a local wheel directory, here
# the CPU torch wheel) is mounted and passed as a build argument.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(worker triton-cpu)

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  echo "making $base from Debian packages (mmdebstrap bookworm minbase)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tmp/rootfs.tar"
  c=$(buildah from scratch)
  buildah add --quiet "$c" "$tmp/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash "$c"
  buildah commit --quiet "$c" "docker.io/library/$base" >/dev/null
  buildah rm "$c" >/dev/null
fi

args=(--isolation chroot --layers)
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  args+=(--secret "id=ca,src=$PIP_CERT")
fi
if [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
  args+=(--volume "$PIP_FIND_LINKS:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
fi
# The build stage behind each image is tagged too (localhost/moderation-<stage>), so that a
# rebuild can tell the layers it replaced: when a tag moves, the image it named goes with its
# untagged parents (a few GB per rebuild after a source change), and the cache used stays.
build_stage() { case $1 in worker) echo worker-build ;; triton-cpu) echo triton-build ;; esac; }
image_id() { buildah images --quiet --no-trunc "$1" 2>/dev/null | head -1 || true; }
tag_stage() {  # tag_stage STAGE IMAGE LOG: build STAGE as IMAGE, drop what IMAGE named before
  local before
  before=$(image_id "$2")
  buildah bud "${args[@]}" --target "$1" --tag "$2" . >> "$3" 2>&1 || return 1
  if [ -n "$before" ] && [ "$before" != "$(image_id "$2")" ]; then
    buildah rmi "$before" >/dev/null 2>&1 || echo "kept the image $2 named before: in use"
  fi
}
failed() { tail -40 "$1"; echo "building $2 failed (log: $1)"; exit 1; }
for target in "${targets[@]}"; do
  image="localhost/moderation-$target:$version"
  stage=$(build_stage "$target")
  log="build-$target.log"
  : > "$log"
  start=$(date +%s)
  tag_stage "$target" "$image" "$log" || failed "$log" "$target"
  if [ -n "$stage" ]; then
    tag_stage "$stage" "localhost/moderation-$stage:$version" "$log" || failed "$log" "$stage"
  fi
  size=$(buildah images --format '{{.Size}}' "$image" | head -1)
  echo "built $image in $(( $(date +%s) - start )) s: $size (log: $log)"
done
