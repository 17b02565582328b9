#!/usr/bin/env bash
# Install Prometheus (Debian `prometheus`) for the live-metrics test, which starts its own server
# on a free port with a generated config. The package's system service is kept from starting
# (policy-rc.d answers 101 while it installs): nothing is left listening on 9090.
# Idempotent: prints the binary's path and exits 0 when it is (already) installed, 1 otherwise.
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    own_policy=1
  fi
  trap '[ "$own_policy" = 1 ] && $sudo rm -f "$policy"' EXIT
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v prometheus
