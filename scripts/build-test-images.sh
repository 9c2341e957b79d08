#!/usr/bin/env bash
# Build the small images the devcontainer tests use, OFFLINE (no image registry is reachable):
# a root filesystem made from Debian's busybox-static, imported with `docker import`.
#
#   scripts/build-test-images.sh            build local/busybox:latest unless it exists
#   FORCE=1 scripts/build-test-images.sh    rebuild it
#
# The image: busybox applets, /etc/passwd and /etc/group (root, vscode 1000), a tiny `getent`
# (the Dev Containers CLI calls it; busybox has none), /etc/os-release (the CLI reads it), and
# PATH + CMD set in the image config (an imported image has an empty config otherwise).
# Needs root (apt) and a running engine (scripts/start-dockerd.sh). Uses the docker CLI: this
# is provisioning, not the agent.
set -euo pipefail
TAG="${TAG:-local/busybox:latest}"
DOCKER="${DOCKER:-docker}"

if [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  exit 0
fi

bb=""
for c in /bin/busybox /usr/bin/busybox; do
  if [ -x "$c" ] && ! ldd "$c" >/dev/null 2>&1; then bb="$c"; break; fi
done
if [ -z "$bb" ]; then
  # only the static build works in a rootfs without libc
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends busybox-static >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends busybox-static >/dev/null; }
  bb=/bin/busybox
fi
if ldd "$bb" >/dev/null 2>&1; then echo "build-test-images: $bb is not static (install busybox-static)" >&2; exit 1; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ca-img.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/vscode,proc,sys,dev,run,var/tmp,workspaces}
chmod 1777 "$root/tmp" "$root/var/tmp"
cp "$bb" "$root/bin/busybox"
for app in $("$bb" --list); do
  [ "$app" = busybox ] || ln -sf busybox "$root/bin/$app"
done
cat >"$root/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
vscode:x:1000:1000:vscode:/home/vscode:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat >"$root/etc/group" <<'GR'
root:x:0:
vscode:x:1000:
nogroup:x:65534:
GR
chown 1000:1000 "$root/home/vscode"
cat >"$root/bin/getent" <<'GE'
#!/bin/sh
# getent passwd|group [name-or-id]
case "$1" in passwd|group) f="/etc/$1" ;; *) echo "getent: unsupported database $1" >&2; exit 1 ;; esac
[ -z "$2" ] && { cat "$f"; exit 0; }
awk -F: -v k="$2" '$1==k || $3==k {print; found=1; exit} END {exit found ? 0 : 2}' "$f"
GE
chmod 755 "$root/bin/getent"
printf 'ID=busybox\nNAME="coder-agent test image"\nVERSION_ID=1\n' >"$root/etc/os-release"
printf '/bin/sh\n' >"$root/etc/shells"

tar --numeric-owner -C "$root" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/sh"]' - "$TAG" >/dev/null
echo "build-test-images: built $TAG" >&2
