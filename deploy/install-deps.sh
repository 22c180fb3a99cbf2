#!/bin/sh
# Installs the Debian packages Herald builds and tests with, when any is missing.
# Safe to run again: it does nothing when everything is there.
# With arguments, installs those packages instead (`make bench` adds its own).
set -eu

PACKAGES="build-essential pkg-config libevent-dev libhiredis-dev libjwt-dev libjansson-dev
libssl-dev openssl redis-server redis-tools python3 python3-websockets python3-pytest clang
libclang-rt-dev nginx haproxy python3-yaml"
[ $# -gt 0 ] && PACKAGES="$*"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
