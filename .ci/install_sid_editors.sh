#!/bin/bash
# Build (once, refreshed weekly) the Debian sid chroot with the newest Krita and GIMP that Debian
# ships; `make test-krita-newest` and `make test-gimp-newest` drive the editors inside it.
#
#   .ci/install_sid_editors.sh      # -> ${EASEL_SID_ROOT:-/var/cache/easel/editors-sid}
#
# Idempotent: a finished chroot carries a stamp naming its package list; the script exits at once
# when the stamp matches and is younger than EASEL_SID_MAX_AGE_DAYS (default 7: sid moves, and
# "newest" should mean this week's). It rebuilds when the chroot is missing, half-built, its
# package list changed or it is too old. The build goes to a temporary folder that is renamed
# only when complete; if a refresh fails while a complete older chroot exists, that one is kept
# (with a warning) so a mirror hiccup does not fail the run.
# Needs root (mmdebstrap --mode=root, chroot); installs the host tools it needs with apt.
set -euo pipefail
ROOT=${EASEL_SID_ROOT:-/var/cache/easel/editors-sid}
MAX_AGE_DAYS=${EASEL_SID_MAX_AGE_DAYS:-7}
# Krita (its Python scripting needs python3-pyqt5, which krita only recommends), GIMP 3 with its
# Python plug-in support, and the X tools the GIMP GUI test uses inside the chroot (Xvfb, xwininfo
# from x11-utils, xdotool). The Krita GUI test uses the host's Xvfb and ImageMagick.
PKGS="krita python3-pyqt5 gimp python3 python3-gi gir1.2-gimp-3.0 gir1.2-gegl-0.4 gir1.2-gtk-3.0 xvfb xauth x11-utils xdotool fonts-dejavu-core"
STAMP="$ROOT/.easel-sid-chroot"
WANT="sid: $PKGS"
. "$(dirname "$0")/chroot_lib.sh"

complete() {  # a finished chroot with this package list (any age)
  [ -x "$1/usr/bin/krita" ] && compgen -G "$1/usr/bin/gimp-console-3.*" >/dev/null \
    && [ "$(cat "$1/.easel-sid-chroot" 2>/dev/null)" = "$WANT" ]
}
versions() {
  chroot "$1" dpkg-query -W -f='${Package} ${Version}\n' krita gimp python3 | tr '\n' ' '
}

if complete "$ROOT" && [ -z "$(find "$STAMP" -mtime +"$MAX_AGE_DAYS" 2>/dev/null)" ]; then
  echo "sid editors chroot ready at $ROOT: $(versions "$ROOT")"
  exit 0
fi
require_root
need_host_tools mmdebstrap:mmdebstrap

start_build "$ROOT"
# The mirror's sid Release file can be weeks old: without Check-Valid-Until false apt rejects it.
if ! mmdebstrap_into sid --aptopt='Acquire::Check-Valid-Until "false"' \
   || ! chroot "$TMP" python3 -c "import PyQt5.QtCore" \
   || ! chroot "$TMP" sh -c '/usr/bin/gimp-console-3.* --version'; then
  if complete "$ROOT"; then
    echo "install_sid_editors.sh: WARNING: refreshing the sid chroot failed; keeping the older one at $ROOT" >&2
    exit 0
  fi
  echo "install_sid_editors.sh: building the sid chroot failed" >&2
  exit 1
fi
finish_build "$ROOT" .easel-sid-chroot
echo "sid editors chroot built at $ROOT $(built_in "$ROOT"): $(versions "$ROOT")"
