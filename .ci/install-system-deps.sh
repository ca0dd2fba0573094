#!/bin/sh
# Install the system packages the integration tests and benchmarks use.
# Idempotent and non-interactive: does nothing (and no apt-get update) when all are present.
set -eu

PACKAGES="openssh-server docker.io debootstrap ffmpeg chromium make python3-venv postgresql"
# --python-only: just what `make demo` needs to create its virtualenv on a fresh Debian.
if [ "${1:-}" = "--python-only" ]; then
    PACKAGES="python3-venv"
fi

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        "install ok installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "system deps: all present ($PACKAGES)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "system deps missing:$missing (re-run as root)" >&2
    exit 1
fi

echo "system deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -q $missing
echo "system deps: done"
