#!/usr/bin/env bash
# Build the Debian base images the image tests build FROM, with no image registry: a
# `debootstrap --variant=minbase bookworm` root filesystem (Debian's package mirror only) plus
# python3, python3-venv, ca-certificates and tini, imported with `docker import`.
#
#   scripts/build-base-image.sh            build both tags below unless they already exist
#   FORCE=1 scripts/build-base-image.sh    rebuild both
#
# Tags (override with BASE_TAG / SYSTEMD_TAG):
#   coder-agent/base:bookworm           python3 3.11 + venv + tini      (the Dockerfile's BASE in CI)
#   coder-agent/base:bookworm-systemd   the same plus systemd as /sbin/init (the systemd unit tests)
#
# One debootstrap feeds both: the first tag is imported, then systemd is installed into the same
# tree with apt in a chroot and the second tag imported. Docs, man pages, locales and apt caches
# are left out of the imported tar (not deleted) so apt in the chroot still has its lists.
# Needs root, a Docker engine (scripts/start-dockerd.sh) and the Debian mirror from
# /etc/apt/sources* (override with DEBIAN_MIRROR). About a minute cold; instant when cached.
set -euo pipefail

BASE_TAG="${BASE_TAG:-coder-agent/base:bookworm}"
SYSTEMD_TAG="${SYSTEMD_TAG:-coder-agent/base:bookworm-systemd}"
DOCKER="${DOCKER:-docker}"
PATH_ENV='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

if [ "${FORCE:-0}" != 1 ] && have "$BASE_TAG" && have "$SYSTEMD_TAG"; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-base-image: needs root (debootstrap, chroot)" >&2; exit 1; }

if ! command -v debootstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -hoE '^(URIs:|deb) *(\[[^]]*\] *)?https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
            | grep -oE 'https?://[^ ]+' | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d "${TMPDIR:-/tmp}/ca-baseimg.XXXXXX")"
cleanup() {
  # never leave a mount behind in a tree we are about to delete
  for m in proc sys dev/pts dev; do mountpoint -q "$work/rootfs/$m" 2>/dev/null && umount -l "$work/rootfs/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/rootfs"

echo "build-base-image: debootstrap bookworm from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
printf 'bookworm-coder-agent-base\n' >"$root/etc/hostname"

import() {  # import TAG CMD: tar the tree without caches/docs and import it
  tar --numeric-owner -C "$root" \
      --exclude=./var/cache/apt/archives --exclude=./var/lib/apt/lists \
      --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/info \
      --exclude=./proc/* --exclude=./sys/* --exclude=./dev/pts/* -c . \
    | "$DOCKER" import --change "ENV $PATH_ENV" --change 'ENV LANG=C.UTF-8' --change "CMD $2" - "$1" >/dev/null
  "$DOCKER" image inspect --format "build-base-image: {{index .RepoTags 0}} {{.Size}} bytes" "$1" >&2
}

: >"$root/etc/resolv.conf"  # docker provides its own; never bake the build host's
import "$BASE_TAG" '["/bin/sh"]'

# The systemd flavour: apt in a chroot, services kept from starting while we install.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
  systemd systemd-sysv >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; exit 1; }
umount -l "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"
# A container has no consoles or udev to wait for; these units only fail or hang there.
for u in getty@tty1.service systemd-udevd.service systemd-udev-trigger.service \
         systemd-firstboot.service systemd-remount-fs.service sys-kernel-debug.mount \
         sys-kernel-tracing.mount dev-hugepages.mount; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
: >"$root/etc/machine-id"
import "$SYSTEMD_TAG" '["/sbin/init"]'
