#!/usr/bin/env bash
# Triton's perf_analyzer for benchmarks/bench_perf_analyzer.py, kept apart from .venv:
# tritonclient 2.41.0 is the last release whose wheel ships the binary, and its Python extras pin a
# geventhttpclient that Locust refuses, so only the wheel itself goes into .tools/perf_analyzer
# (no dependencies), with the CUDA runtime library it links against (no GPU needed) and Debian's
# libb64. Idempotent. Prints the LD_LIBRARY_PATH and binary to use.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/perf_analyzer
if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null; }
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null
  fi
fi
if [ ! -x "$dest/bin/perf_analyzer" ]; then
  PIP_ROOT_USER_ACTION=ignore .venv/bin/python -m pip install --quiet --no-deps --target "$dest" tritonclient==2.41.0 nvidia-cuda-runtime-cu12==12.9.79 \
    2> >(grep -v -e 'is ignored: it is neither' >&2)
  chmod +x "$dest/bin/perf_analyzer"
fi
echo "LD_LIBRARY_PATH=$PWD/$dest/nvidia/cuda_runtime/lib $PWD/$dest/bin/perf_analyzer"
