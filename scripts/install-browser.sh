#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian `chromium`, `chromium-driver`) for the browser
# tests (report screenshots, Locust web UI), if missing.
# Idempotent: prints the browser's path and exits 0 when it is (already) installed, 1 otherwise.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
command -v chromium
