#!/usr/bin/env bash
# Create .venv and install the project (and, with --dev, the test tools and headless Chromium)
# from the pinned path.
# Idempotent: a second run only checks that everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "usage: scripts/install.sh [--dev]" >&2; exit 2 ;;
  esac
done
python3 -m venv .venv
extra=""
[ "$dev" = 1 ] && extra="[dev]"
# pip warns about every configured local index that lacks a package; keep real errors only.
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extra}" \
  2> >(grep -v -e 'is ignored: it is neither' -e 'BuildBackendWarning' >&2)
if [ "$dev" = 1 ]; then
  bash scripts/install-browser.sh >/dev/null  # headless Chromium + driver for the browser tests
  bash scripts/install-prometheus.sh >/dev/null  # Prometheus for the live-metrics test
fi
echo "installed into .venv (python: $(.venv/bin/python --version 2>&1))"
