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
# GIMP 3 with its Python plug-in support, a virtual X server and the X tools the GUI test uses
# (xwininfo from x11-utils to find the dialog, xdotool to press its buttons).
PKGS="gimp python3 python3-gi gir1.2-gimp-3.0 gir1.2-gegl-0.4 gir1.2-gtk-3.0 xvfb xauth x11-utils xdotool fonts-dejavu-core"
STAMP="$ROOT/.easel-gimp-chroot"
WANT="trixie: $PKGS"
. "$(dirname "$0")/chroot_lib.sh"

if [ -x "$ROOT/usr/bin/gimp-console-3.0" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  echo "GIMP 3 chroot ready at $ROOT"
  exit 0
fi
require_root
need_host_tools mmdebstrap:mmdebstrap debootstrap:debootstrap unshare:util-linux

start_build "$ROOT"
if ! mmdebstrap_into trixie; then
  echo "install_gimp.sh: mmdebstrap failed; trying debootstrap + apt-get" >&2
  rm -rf --one-file-system "$TMP"
  debootstrap --variant=minbase --keyring="$KEYRING" trixie "$TMP" "$MIRROR"
  cp -L /etc/resolv.conf "$TMP/etc/resolv.conf"
  # apt inside the chroot needs /proc and /dev; a private mount namespace drops them afterwards.
  unshare --mount --propagation private sh -ec '
    mount -t proc proc "$1/proc"; mount --rbind /dev "$1/dev"
    chroot "$1" apt-get update
    chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $2
    chroot "$1" apt-get clean' sh "$TMP" "$PKGS"
fi
chroot "$TMP" gimp-console-3.0 --version
finish_build "$ROOT" .easel-gimp-chroot
echo "GIMP 3 chroot built at $ROOT $(built_in "$ROOT")"
