#!/usr/bin/env bash
# Provision the machine for the integration tests. Idempotent; needs root for apt.
# Each capability that needs a real component adds its step here (and says so in the README):
#   - Go + hashicorp/yamux + nhooyr websocket (Debian packages) for the yamux interop peer
#   - a Docker engine (scripts/start-dockerd.sh) and the Dev Containers CLI (npm)
#   - wireguard-go, wireguard-tools, iproute2, iputils-ping for the tailnet interop tests
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
# The system sshd runs root's login shell, whose ~/.bashrc may run `pyenv init` (pyenv machines):
# a rehash lock left by a killed shell makes every such login wait for it, and the sshd tests time
# out. A lock older than two minutes is stale (a rehash takes well under a second): remove it.
find "${PYENV_ROOT:-$HOME/.pyenv}/shims" -maxdepth 1 -name .pyenv-shim -mmin +2 -delete 2>/dev/null || true
# fault and security suites (tests/faults, tests/security): openssl makes a self-signed cert for
# the HTTPS devserver; mount (util-linux) puts the log dir on a small tmpfs; iproute2 gives `ss`;
# the user `nobody` (base-passwd) is the "other user" of the socket test
apt_install openssl util-linux iproute2 base-passwd
# tailnet (tests/tailnet): Debian's wireguard-go + wg as the real WireGuard peer, its TUN link in a
# network namespace (iproute2), ping -6 from there (iputils-ping)
apt_install wireguard-go wireguard-tools iproute2 iputils-ping
# followed log files (tests/logs/test_follow_rewrite.py): real `logrotate` for copytruncate rotation
apt_install logrotate
# userspace TCP against the kernel's (tests/tailnet/test_tcp_kernel.py): iproute2 (ip netns, tc),
# procps (sysctl), iptables (ip6tables' statistic match drops 1% where the kernel has no sch_netem)
apt_install iproute2 procps iptables
# reconnecting PTY (tests/rpty/test_screen.py): GNU screen for the screen backend
apt_install screen

# --- devcontainers: a Docker engine, the test image, the Dev Containers CLI -----------------
# The engine: scripts/start-dockerd.sh (installs docker.io, starts dockerd; a no-op when one
# answers). The image: scripts/build-test-images.sh (local/busybox:latest, built offline).
# The CLI: npm package @devcontainers/cli under DEVCONTAINERS_CLI_PREFIX, linked as
# /usr/local/bin/devcontainer so the agent finds it on PATH (or set CODER_AGENT_DEVCONTAINERS_CLI).
apt_install git ca-certificates
bash scripts/start-dockerd.sh start
bash scripts/build-test-images.sh
DEVCONTAINERS_CLI_PREFIX="${DEVCONTAINERS_CLI_PREFIX:-/opt/coder-agent/devcontainers-cli}"
if ! [ -x "$DEVCONTAINERS_CLI_PREFIX/node_modules/.bin/devcontainer" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  if [ "$node_major" -lt 20 ]; then
    echo "provision: the Dev Containers CLI needs Node >= 20 (found $(node --version 2>/dev/null || echo none))" >&2
    exit 1
  fi
  mkdir -p "$DEVCONTAINERS_CLI_PREFIX"
  npm install --silent --no-audit --no-fund --prefix "$DEVCONTAINERS_CLI_PREFIX" @devcontainers/cli >/dev/null
fi
ln -sf "$DEVCONTAINERS_CLI_PREFIX/node_modules/.bin/devcontainer" /usr/local/bin/devcontainer

# Deployment tests (tests/deploy): a Docker engine, the offline Debian base images the project's
# Dockerfile is built FROM (cached once built), systemd-analyze for the unit, debootstrap.
apt_install systemd debootstrap
bash scripts/start-dockerd.sh
bash scripts/build-base-image.sh
