# Shared by .ci/install_gimp.sh and .ci/install_sid_editors.sh (sourced, not run): the Debian
# mirror, the host tools, and a chroot built in a temporary folder ($TMP) that is renamed to its
# place only when complete, so an interrupted run never leaves a chroot that looks finished.
# The sourcing script sets PKGS (the packages to include) and WANT (the stamp's text) first.

MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
export DEBIAN_FRONTEND=noninteractive

require_root() {
  [ "$(id -u)" = 0 ] || { echo "$(basename "$0"): must run as root (mmdebstrap --mode=root, chroot)" >&2; exit 1; }
}

# need_host_tools COMMAND:PACKAGE...: apt-get install the packages whose command is missing
# (and Debian's archive keyring).
need_host_tools() {
  local need="" pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need="$need ${pair#*:}"
  done
  [ -e "$KEYRING" ] || need="$need debian-archive-keyring"
  if [ -n "$need" ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $need
  fi
}

# start_build ROOT: t0 (the start), TMP (ROOT.building.PID: empty, removed on exit until finish_build)
start_build() {
  t0=$(date +%s)
  TMP="$1.building.$$"
  trap 'rm -rf --one-file-system "$TMP"' EXIT
  mkdir -p "$(dirname "$1")"
  rm -rf --one-file-system "$TMP"
}

# mmdebstrap_into SUITE [OPTION...]: Debian SUITE with $PKGS into $TMP
mmdebstrap_into() {
  local suite=$1
  shift
  mmdebstrap --variant=apt --mode=root --keyring="$KEYRING" "$@" \
    --include="$(echo $PKGS | tr ' ' ,)" "$suite" "$TMP" "deb $MIRROR $suite main"
}

# finish_build ROOT STAMP_FILE: $WANT into $TMP/STAMP_FILE, then $TMP replaces ROOT
finish_build() {
  echo "$WANT" > "$TMP/$2"
  rm -rf --one-file-system "$1"
  mv "$TMP" "$1"
  trap - EXIT
}

# built_in ROOT: "in N s (SIZE)" since start_build
built_in() {
  echo "in $(( $(date +%s) - t0 )) s ($(du -sh --one-file-system "$1" | cut -f1))"
}
