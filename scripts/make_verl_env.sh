#!/usr/bin/env bash
# Build the optional verl environment (.venv-verl) used by `make test-verl`.
#
# verl 0.9.1 pins transformers <5.11 and brings ray, hydra and wandb, so it cannot share the main
# .venv. Two conflicts are resolved here on purpose:
#   * torch is installed FIRST and pinned (a constraint file keeps verl's resolver from replacing
#     the CPU wheel with a CUDA one);
#   * hydra-core/omegaconf need antlr4-python3-runtime 4.9.*, while conspo's math-verify stack
#     defaults to antlr 4.13. latex2sympy2_extended ships parsers for both, selected by
#     math-verify's `antlr4_9_3` extra, so this env uses antlr 4.9.3 and installs conspo itself
#     with --no-deps (its other runtime dependencies are listed below explicitly).
# Idempotent: does nothing when the stamp is newer than this script and pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VERL_VENV:-.venv-verl}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VERL_VERSION="${VERL_VERSION:-0.9.1}"
STAMP="$VENV/.installed"

if [[ -f "$STAMP" && "$STAMP" -nt scripts/make_verl_env.sh && "$STAMP" -nt pyproject.toml && "$STAMP" -nt constraints-verl.txt ]]; then
    exit 0
fi

start=$(date +%s)
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q "torch==$TORCH_VERSION"

pins="$(mktemp)"
trap 'rm -f "$pins"' EXIT
# Exact versions (CI and `make test-verl`) come from constraints-verl.txt; torch and antlr are pinned on top.
grep -v -e '^torch==' -e '^antlr4-python3-runtime==' constraints-verl.txt > "$pins"
printf 'torch==%s\nantlr4-python3-runtime==4.9.3\n' "$TORCH_VERSION" >> "$pins"

# TransferQueue, cachetools, pyzmq, msgspec, fastapi and uvicorn come from verl's `verl-core` extra: the V1
# trainer (and so the `conspo_sync` trainer) imports them. The rest of that extra is GPU-side and not needed.
"$PIP" install -q -c "$pins" \
    "verl==$VERL_VERSION" \
    "TransferQueue>=0.1.10" cachetools pyzmq msgspec fastapi uvicorn \
    "transformers>=5.5.3,<5.11,!=5.6.0" \
    "math-verify[antlr4_9_3]>=0.8,<0.10" \
    "antlr4-python3-runtime==4.9.3" \
    "accelerate>=1.4" "datasets>=3.0" "tokenizers>=0.21" "safetensors>=0.4.3" "pyyaml>=6.0" \
    "rich>=13.0" "tensorboard>=2.15" "matplotlib>=3.8" "numpy>=1.26" \
    "pytest>=8"
# conspo itself, without its antlr 4.13 requirement (see above).
"$PIP" install -q --no-deps -e .

"$VENV/bin/python" - <<'PY'
import antlr4, hydra, torch, transformers, verl  # noqa: F401
import verl.trainer.ppo.v1.trainer_sync  # noqa: F401  (needs TransferQueue)
import conspo
from math_verify import parse, verify

assert verify(parse("$\\frac{1}{2}$"), parse("0.5")), "math-verify broken under antlr 4.9.3"
print(f"verl {verl.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"conspo {conspo.__version__}")
PY
touch "$STAMP"
echo "built $VENV in $(( $(date +%s) - start )) s"
