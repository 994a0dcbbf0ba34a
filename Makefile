# One command each, doing its own set-up: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Machines without an NVIDIA GPU get PyTorch's CPU wheels (a few hundred MB)
# instead of PyPI's default CUDA build (several GB). Override with TORCH_INDEX=.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)

.PHONY: install test demo lint

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || \
	  $(PY) -m pip install "torch>=2.2" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

demo: install
	$(PY) -m skvae demo

lint: install
	$(PY) -m pip install ruff
	$(PY) -m ruff check skvae tests benchmarks
	$(PY) -m ruff format --check skvae tests benchmarks
