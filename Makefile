# One command each, doing its own set-up: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Machines without an NVIDIA GPU get PyTorch's CPU wheels (a few hundred MB)
# instead of PyPI's default CUDA build (several GB). Override with TORCH_INDEX=
# (empty: PyPI's default build) and TORCH_SPEC= (e.g. "torch>=2.2"). The pin
# is for this development set-up only; pyproject.toml accepts any torch>=2.2.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test demo lint docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || \
	  $(PY) -m pip install --retries 1 "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

demo: install
	$(PY) -m skvae demo

lint: install
	$(PY) -m pip install ruff
	$(PY) -m ruff check skvae tests benchmarks docs
	$(PY) -m ruff format --check skvae tests benchmarks docs

$(VENV)/.docs-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -e ".[docs]"
	touch $@

# The documentation site, gallery included, in docs/_build/html (warnings are errors).
docs: $(VENV)/.docs-installed
	$(MAKE) -C docs html SPHINXBUILD="$(abspath $(VENV))/bin/sphinx-build"
