#!/usr/bin/env bash
# The GPU check (issue 14, item 5): batched against one-at-a-time scoring for the three
# families, bfloat16 against float32, and full and triage throughput at batch 1, 8 and 32 for
# the LlavaGuard-0.5B architecture, on the lent accelerator machine (one H200). It reaches no
# package registry and runs the machine's own python3 (torch 2.11, transformers 5.17), so the
# wheels llavaguard needs beyond that travel in .whl/ and the photos in bench/.cache/photos,
# both made here first by bench/gpu_prepare.sh. llavaguard itself runs from src/.
#
# When a session is lent a machine, after `bash bench/gpu_prepare.sh`, ONE call of the run tool:
#   run(command="bash bench/gpu_check.sh", carry=[".whl", "bench/.cache/photos"], timeout_s=540)
# It stops itself within 8 minutes (budget 420 s for the stages, after the install and start)
# and writes $OUT/gpu-h200.json and $OUT/gpu_check.log; commit the JSON as
# bench/results/gpu-h200.json. Partial results come back too: each stage is written as it ends.
#
# A dry run on a CPU, in a venv with the machine's versions (see docs/benchmarks.md):
#   PYTHON=/tmp/venv/bin/python bash bench/gpu_check.sh --device cpu --quick
# Arguments are passed to bench/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-bench/.cache}
export OUT
mkdir -p "$OUT"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run bash bench/gpu_prepare.sh first"; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .whl/*.whl || exit 2
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader
# the hard stop: 460 s leaves the python check's own 420 s budget room to finish its stage
timeout -s INT -k 10 460 "$PY" bench/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log"
