#!/usr/bin/env bash
# The GPU check for the first GPU machine: verify --level 2, then LoRA and full fine-tunes of a random-init
# ~1B Llama with packing, written as one JSON (benchmarks/gpu_check.py; docs/train.md, "A GPU check").
# Made for a host without network that has Python 3.12 with torch, transformers, peft, accelerate,
# nvidia-ml-py, psutil, pyyaml and rich: llmlab's other core dependencies come from a wheel directory,
# made beforehand on a machine with network (3.7 MiB):
#
#   pip download --dest wheels --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
#       "pydantic>=2.7,<3" "docker>=7,<8" "filelock>=3.12,<4"
#
# Usage: benchmarks/gpu_check.sh [--wheels DIR] [--out FILE] [--work DIR] [--size 1b|tiny] [--steps N]
#                                [--verify-level N] [--dry-run]
# Takes at most 8 minutes on one GPU (about 1 for verify, 1-2 per fine-tune); never part of CI.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"
wheels=""
out="gpu_check.json"
work=""
passthrough=()

while (($#)); do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --size|--steps|--verify-level) passthrough+=("$1" "$2"); shift 2 ;;
    --dry-run) passthrough+=("$1"); shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "$wheels" ]]; then
  # --no-index: the host has no network; what is installed already (torch, transformers, ...) is kept.
  "$python" -m pip install --quiet --no-index --find-links "$wheels" "pydantic>=2.7,<3" "docker>=7,<8" \
    "filelock>=3.12,<4"
fi
if [[ -z "$work" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi

# llmlab runs from this checkout; HF_HUB_OFFLINE: nothing may try the network.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
"$python" -c 'import pydantic, llmlab.cli' || {
  echo "gpu_check.sh: llmlab does not import; pass --wheels DIR with its dependencies (see --help)" >&2
  exit 3
}
exec timeout 480 "$python" "$here/gpu_check.py" --work "$work" --out "$out" "${passthrough[@]}"
