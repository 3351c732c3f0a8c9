#!/bin/bash
# Build (once) the Debian trixie chroot with GIMP 3 that tests/editors/test_gimp.py drives.
#
#   .ci/install_gimp.sh            # -> ${EASEL_GIMP_ROOT:-/var/cache/easel/gimp3-trixie}
#
# Idempotent: a finished chroot carries a stamp naming its package list; the script exits at
# once when the stamp matches, and rebuilds when the chroot is missing, half-built or its
# package list changed. The build goes to a temporary folder that is renamed only when it
# is complete, so an interrupted run never leaves a chroot that looks finished.
# Needs root (mmdebstrap --mode=root, chroot); installs the host tools it needs with apt.
set -euo pipefail
ROOT=${EASEL_GIMP_ROOT:-/var/cache/easel/gimp3-trixie}
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# GIMP 3 with its Python plug-in support, a virtual X server and the X tools the GUI test uses
# (xwininfo from x11-utils to find the dialog, xdotool to press its buttons).
PKGS="gimp python3 python3-gi gir1.2-gimp-3.0 gir1.2-gegl-0.4 gir1.2-gtk-3.0 xvfb xauth x11-utils xdotool fonts-dejavu-core"
STAMP="$ROOT/.easel-gimp-chroot"
WANT="trixie: $PKGS"
export DEBIAN_FRONTEND=noninteractive

if [ -x "$ROOT/usr/bin/gimp-console-3.0" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  echo "GIMP 3 chroot ready at $ROOT"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install_gimp.sh: must run as root (mmdebstrap --mode=root, chroot)" >&2; exit 1; }

need=""
command -v mmdebstrap >/dev/null || need="$need mmdebstrap"
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v unshare >/dev/null || need="$need util-linux"
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need="$need debian-archive-keyring"
if [ -n "$need" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $need
fi

t0=$(date +%s)
TMP="$ROOT.building.$$"
trap 'rm -rf --one-file-system "$TMP"' EXIT
mkdir -p "$(dirname "$ROOT")"
rm -rf --one-file-system "$TMP"
if ! mmdebstrap --variant=apt --mode=root --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
     --include="$(echo $PKGS | tr ' ' ,)" trixie "$TMP" "deb $MIRROR trixie main"; then
  echo "install_gimp.sh: mmdebstrap failed; trying debootstrap + apt-get" >&2
  rm -rf --one-file-system "$TMP"
  debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg trixie "$TMP" "$MIRROR"
  cp -L /etc/resolv.conf "$TMP/etc/resolv.conf"
  # apt inside the chroot needs /proc and /dev; a private mount namespace drops them afterwards.
  unshare --mount --propagation private sh -ec '
    mount -t proc proc "$1/proc"; mount --rbind /dev "$1/dev"
    chroot "$1" apt-get update
    chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $2
    chroot "$1" apt-get clean' sh "$TMP" "$PKGS"
fi
chroot "$TMP" gimp-console-3.0 --version
echo "$WANT" > "$TMP/.easel-gimp-chroot"
rm -rf --one-file-system "$ROOT"
mv "$TMP" "$ROOT"
trap - EXIT
echo "GIMP 3 chroot built at $ROOT in $(( $(date +%s) - t0 )) s ($(du -sh --one-file-system "$ROOT" | cut -f1))"
