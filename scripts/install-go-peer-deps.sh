#!/usr/bin/env bash
# Install what tests/rpc/test_go_interop.py needs to build its Go yamux peer offline:
# Debian's Go toolchain plus the hashicorp/yamux and nhooyr.io/websocket sources
# (built with GO111MODULE=off GOPATH=/usr/share/gocode; no module proxy involved).
# Idempotent: does nothing when the packages are already installed.
set -euo pipefail

packages=(golang-go golang-github-hashicorp-yamux-dev golang-nhooyr-websocket-dev)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "go peer deps: already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
install() { $sudo apt-get install -y "${missing[@]}"; }

echo "go peer deps: installing ${missing[*]}"
# A fresh machine has no package lists yet: update only when the install needs it.
if ! install; then
  $sudo apt-get update
  install
fi
