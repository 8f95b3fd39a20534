#!/usr/bin/env bash
# Install the system packages the browser tests need (Debian/Ubuntu, run as root).
# Idempotent: does nothing when /usr/bin/chromium is already present.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
    chromium \
    fonts-dejavu-core \
    fonts-liberation \
    fontconfig \
    ca-certificates

/usr/bin/chromium --version
