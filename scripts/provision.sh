#!/usr/bin/env bash
# Provision the machine for the integration tests. Idempotent; needs root for apt.
# Each capability that needs a real component adds its step here (and says so in the README):
#   - Go + hashicorp/yamux + nhooyr websocket (Debian packages) for the yamux interop peer
#   - a Docker engine (scripts/start-dockerd.sh) and the Dev Containers CLI (npm)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  # apt_install PKG...: install what is missing (update the lists once if needed)
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

if [ "$(id -u)" != 0 ]; then
  echo "provision: not root; skipping system packages (tests that need them will fail under CI=true)" >&2
  exit 0
fi
# (capability steps follow)
# Go + hashicorp/yamux + nhooyr websocket, for the yamux interop peer (tests/rpc/test_go_interop.py)
bash scripts/install-go-peer-deps.sh
# git credentials (tests/gitauth): git + git-http-backend, a real ssh client and sshd on loopback
apt_install git openssh-client openssh-server
