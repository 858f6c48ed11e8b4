#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11, made on this machine, for builds that cannot reach an
# image registry: mmdebstrap a minimal root filesystem and `docker import` it. Prints the image's name.
# Whatever exists is reused: the image in the daemon (DOCKER_HOST), else the cached tarball in
# $FITNAS_DOCKER_CACHE (default ~/.cache/fitnas-docker). The name carries a hash of this script, so
# any change to it (the package list, say) makes a new base.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${FITNAS_DOCKER_CACHE:-$HOME/.cache/fitnas-docker}
MIRROR=${FITNAS_DEBIAN_MIRROR:-http://deb.debian.org}
NAME=fitnas-base:bookworm-$(sha256sum scripts/docker-base.sh | cut -c1-12)

if docker image inspect "$NAME" >/dev/null 2>&1; then
  echo "$NAME"
  exit 0
fi

tarball="$CACHE/${NAME/:/-}.tar"
if [ ! -s "$tarball" ]; then
  command -v mmdebstrap >/dev/null || { echo "docker-base: mmdebstrap is missing: bash scripts/docker-setup.sh" >&2; exit 1; }
  mkdir -p "$CACHE"
  echo "docker-base: mmdebstrap bookworm into $tarball" >&2
  trap 'rm -f "$tarball.tmp.$$"' EXIT
  # variant apt: Essential packages and apt; git for DVC; no documentation.
  mmdebstrap --quiet --format=tar --variant=apt --include=python3,python3-venv,git,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tarball.tmp.$$" \
    "deb $MIRROR/debian bookworm main" \
    "deb $MIRROR/debian bookworm-updates main" \
    "deb $MIRROR/debian-security bookworm-security main" >&2
  mv "$tarball.tmp.$$" "$tarball"  # whole or absent, for a run interrupted or running beside another
fi
# The label marks every image built on this base, so scripts/docker-build.sh prunes only those.
docker import --change 'CMD ["/bin/bash"]' --change 'LABEL fitnas.base=bookworm' "$tarball" "$NAME" >/dev/null
# Earlier bases: their tarballs go, their names too (an image still built on one keeps its layers).
find "$CACHE" -maxdepth 1 -name 'fitnas-base-bookworm-*.tar' ! -name "$(basename "$tarball")" -delete
docker images fitnas-base --format '{{.Repository}}:{{.Tag}}' | { grep -vxF "$NAME" || true; } \
  | xargs -r docker rmi >/dev/null
echo "$NAME"
