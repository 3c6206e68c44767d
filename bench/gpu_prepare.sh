#!/usr/bin/env bash
# Fill .whl/ with the wheels bench/gpu_check.sh installs on the GPU machine, which reaches no
# package registry. Run here, where pip reaches PyPI; .whl/ is ignored by git and travels as a
# `carry` path. Only what llavaguard's transformers engine needs and that machine's python3
# lacks (see /work/.library/device/KINDS.md, "Python packages already there"): pydantic and its
# own needs (the typed configs), xgrammar and its FFI (constrained JSON answers). torch,
# transformers, typer, rich, pyyaml, httpx, pillow, numpy and scikit-image are there already.
# Versions are the ones this project's own environment runs with. Also writes the benchmark
# photos (bench/.cache/photos, carried too) so the check needs nothing from scikit-image there.
#
#   bash bench/gpu_prepare.sh            # about 8 MiB; prints the folder's size
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0 xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
)
rm -rf .whl && mkdir -p .whl
# cp312 x86_64 wheels for the machine's Python 3.12.3; pip matches each manylinux tag exactly
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do
  platforms+=(--platform "${tag}_x86_64")
done
PIP_FIND_LINKS= "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl "${WHEELS[@]}"
# the photos every bench uses (scikit-image's), made here with this project's own environment
"${BENCH_PYTHON:-.venv/bin/python}" -c 'import sys; sys.path.insert(0, "bench")
from bench_speed import PHOTOS, photo_paths; print(len(photo_paths(len(PHOTOS))), "photos")'
du -sh .whl bench/.cache/photos
