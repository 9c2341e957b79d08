#!/usr/bin/env bash
# Start a Docker engine for the tests on a machine without systemd (CI, dev boxes).
#   scripts/start-dockerd.sh            install docker.io if needed, start dockerd, wait for the API
#   scripts/start-dockerd.sh status     exit 0 when the engine answers
#   scripts/start-dockerd.sh stop       stop the engine this script started
# Idempotent: when an engine already answers on the socket, `start` leaves it alone.
# One engine per host: never start a second dockerd next to a running one.
# Settings: DOCKERD_ROOT (state, default /tmp/coder-agent-dockerd), DOCKERD_SOCK (/var/run/docker.sock),
# DOCKERD_WAIT (seconds, 60).
set -euo pipefail
ROOT="${DOCKERD_ROOT:-/tmp/coder-agent-dockerd}"
SOCK="${DOCKERD_SOCK:-/var/run/docker.sock}"
WAIT="${DOCKERD_WAIT:-60}"
PIDFILE="$ROOT/dockerd.pid"
LOG="$ROOT/dockerd.log"

answers() { command -v docker >/dev/null 2>&1 && docker -H "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-start}" in
start)
  if [ -S "$SOCK" ] && answers; then exit 0; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
  fi
  mkdir -p "$ROOT/data" "$ROOT/exec"
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "dockerd $(cat "$PIDFILE") runs but $SOCK does not answer; see $LOG" >&2; exit 1
  fi
  rm -f "$PIDFILE"; [ -S "$SOCK" ] && rm -f "$SOCK"
  setsid dockerd --data-root "$ROOT/data" --exec-root "$ROOT/exec" --pidfile "$PIDFILE" \
    --host "unix://$SOCK" >"$LOG" 2>&1 </dev/null &
  pid=$!
  deadline=$(( $(date +%s) + WAIT ))
  until answers; do
    kill -0 "$pid" 2>/dev/null || { echo "dockerd exited; last log lines:" >&2; tail -n 20 "$LOG" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "dockerd did not answer in ${WAIT}s" >&2; tail -n 20 "$LOG" >&2; exit 1; }
    sleep 0.1
  done
  echo "dockerd answering on $SOCK" >&2
  ;;
status) answers ;;
stop)
  [ -f "$PIDFILE" ] || exit 0
  pid="$(cat "$PIDFILE")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" || true
  rm -f "$PIDFILE"
  ;;
*) echo "usage: $0 [start|status|stop]" >&2; exit 2 ;;
esac
