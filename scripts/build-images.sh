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
for target in "${targets[@]}"; do
  image="localhost/moderation-$target:$version"
  start=$(date +%s)
  before=$(buildah images --quiet --no-trunc "$image" 2>/dev/null | head -1 || true)
  buildah bud "${args[@]}" --target "$target" --tag "$image" . > "build-$target.log" 2>&1 \
    || { tail -40 "build-$target.log"; echo "building $target failed (log: build-$target.log)"; exit 1; }
  # The tag moved: drop the image it named and its untagged parents, layers this build no
  # longer uses (a few GB per rebuild after a source change), keeping the cache it did use.
  after=$(buildah images --quiet --no-trunc "$image" | head -1)
  if [ -n "$before" ] && [ "$before" != "$after" ]; then
    buildah rmi "$before" >/dev/null 2>&1 && echo "removed the image $image named before" \
      || echo "kept the image $image named before (${before:7:12}: in use)"
  fi
  size=$(buildah images --format '{{.Size}}' "$image" | head -1)
  echo "built $image in $(( $(date +%s) - start )) s: $size (log: build-$target.log)"
done
