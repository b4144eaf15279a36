#!/usr/bin/env bash
# Debian packages the project needs: emoji art, CLDR names and an SVG rasteriser for the
# npm art styles (demo model training, evaluation, sample rendering), redis-server (the
# embedded stack), buildah and mmdebstrap (make image, the container smoke test),
# prometheus with promtool (alert rule tests, dashboard test) and chromium with
# chromium-driver (the policy console's browser test).
# Installs them with apt when missing and running as root; otherwise says what to run.
set -euo pipefail
declare -A need=(
  [fonts-noto-color-emoji]=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
  [unicode-cldr-core]=/usr/share/unicode/cldr/common/annotations/en.xml
  [ruby-gemojione]=/usr/share/rubygems-integration/all/gems
  [librsvg2-bin]=/usr/bin/rsvg-convert
  [redis-server]=/usr/bin/redis-server
  [buildah]=/usr/bin/buildah
  [mmdebstrap]=/usr/bin/mmdebstrap
  [prometheus]=/usr/bin/promtool
  [chromium]=/usr/bin/chromium
  [chromium-driver]=/usr/bin/chromedriver
)
missing=()
for pkg in "${!need[@]}"; do
  [ -e "${need[$pkg]}" ] || missing+=("$pkg")
done
if ! ls /usr/share/rubygems-integration/all/gems/gemojione-*/assets/png >/dev/null 2>&1; then
  [[ " ${missing[*]-} " == *" ruby-gemojione "* ]] || missing+=(ruby-gemojione)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing system packages: ${missing[*]}" >&2
  echo "run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
