#!/bin/bash
# Install Debian's Krita (5.1.5 on bookworm) and what the Krita editor tests need:
# PyQt5 for Krita's Python plugins, Xvfb + xauth for the GUI run, ImageMagick for the screenshot.
# Idempotent: does nothing when everything is already installed; runs `apt-get update` only when
# a package is missing and the package lists are older than an hour.
set -euo pipefail
PACKAGES=(krita python3-pyqt5 python3-sip xvfb xauth imagemagick)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_krita: all present ($(dpkg-query -W -f='${Version}' krita))"
  exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
  $SUDO apt-get update -q
fi
echo "install_krita: installing ${missing[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
command -v krita >/dev/null && command -v kritarunner >/dev/null && command -v Xvfb >/dev/null
echo "install_krita: done ($(dpkg-query -W -f='${Version}' krita))"
