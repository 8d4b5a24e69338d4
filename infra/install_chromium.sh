#!/usr/bin/env bash
# Install headless Chromium from the Debian packages (for the report's browser test); idempotent.
#
#   infra/install_chromium.sh            # installs only when `chromium` is missing or broken
#
# Needs root (or passwordless sudo) and an apt mirror. Prints the browser's path and version on success.
# Override the binary with CHROMIUM=/path/to/chromium (then nothing is installed).
set -euo pipefail

BIN="${CHROMIUM:-chromium}"

works() { "$1" --headless --no-sandbox --version >/dev/null 2>&1 || "$1" --version >/dev/null 2>&1; }

if command -v "$BIN" >/dev/null 2>&1 && works "$(command -v "$BIN")"; then
  echo "chromium: $(command -v "$BIN") ($("$BIN" --version 2>/dev/null | head -1))"
  exit 0
fi
if [ -n "${CHROMIUM:-}" ]; then
  echo "install_chromium: CHROMIUM=$CHROMIUM does not run" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_chromium: need root (or passwordless sudo) to run apt-get install chromium" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# A lock held by another apt run (e.g. a parallel CI step) is waited for, not failed on.
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
$SUDO apt-get "${APT_OPTS[@]}" update -qq
# fonts-dejavu-core: real glyphs for the report's text (without any font the page renders boxes).
$SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

if ! works "$(command -v chromium)"; then
  echo "install_chromium: chromium installed but does not start" >&2
  exit 1
fi
echo "chromium: $(command -v chromium) ($(chromium --version 2>/dev/null | head -1))"
