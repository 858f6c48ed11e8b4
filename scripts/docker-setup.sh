#!/usr/bin/env bash
# What building the Docker image here needs: Debian's docker.io (dockerd, containerd, runc) and
# mmdebstrap (the local base image). Installs only what is missing; quiet unless apt fails.
# Services are not started: the tests start their own dockerd and stop it by PID.
set -euo pipefail
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
echo "docker-setup: installing ${missing[*]}"
log=$(mktemp)
install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; }
if ! install && ! { $SUDO apt-get update -q >>"$log" 2>&1 && install; }; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
