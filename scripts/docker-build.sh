#!/usr/bin/env bash
# Build the fitnas image the way our CI does, where no image registry and no download.pytorch.org are
# reachable: the base image made here (scripts/docker-base.sh), torch from a local wheel folder, and
# the machine's CA bundle so that pip in the build trusts a TLS-intercepting proxy.
#   usage: scripts/docker-build.sh [TAG]        (default: fitnas; talks to the daemon in DOCKER_HOST)
#   TORCH_WHEELS       folder holding torch-2.13.0+cpu-*.whl (default /opt/wheels)
#   FITNAS_CA_BUNDLE   CA bundle for pip (default: $PIP_CERT, $SSL_CERT_FILE, then Debian's bundle)
# Users need none of this: `docker build -t fitnas .` pulls python:3.11-slim and PyTorch's CPU wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-fitnas}
WHEELS=${TORCH_WHEELS:-/opt/wheels}
CA=${FITNAS_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}

base=$(bash scripts/docker-base.sh)

# Build-time inputs in docker/ (git-ignored). Hard links cost no space; same content keeps the cache.
mkdir -p docker/wheels
shopt -s nullglob
wheels=("$WHEELS"/torch-2.13.0+cpu-*.whl)
[ ${#wheels[@]} -gt 0 ] || { echo "docker-build: no torch-2.13.0+cpu wheel in $WHEELS (set TORCH_WHEELS)" >&2; exit 1; }
for wheel in "${wheels[@]}"; do
  ln -f "$wheel" docker/wheels/ 2>/dev/null || cp -f "$wheel" docker/wheels/
done
trap 'rm -f docker/ca-certificates.crt' EXIT
[ -f "$CA" ] && cp "$CA" docker/ca-certificates.crt

args=(--network host --build-arg "BASE=$base" --build-arg TORCH_SOURCE=docker/wheels)
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [ -n "${!var:-}" ] && args+=(--build-arg "$var=${!var}")
done
# The classic builder: Debian's docker.io has no buildx, and it takes --network host as it is.
export DOCKER_BUILDKIT=0
# The build stage gets a name of its own, so that pruning below keeps it as the next build's cache.
docker build "${args[@]}" --target build -t "${TAG%%:*}:build-stage" .
docker build "${args[@]}" -t "$TAG" .
# Layers no tagged image uses any more, among those built on our base only (the daemon may be yours).
docker image prune -f --filter label=fitnas.base >/dev/null
