# `make demo` and `make test` work on a fresh machine with only Python >= 3.10: they create .venv,
# install the package with torch pinned by constraints.txt, then run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# peer libraries for the interop tests whose declared dependencies would replace the pinned torch
# (dictionary-learning -> nnsight, torchvision); the modules the tests use need only torch and einops
NO_DEPS_PEERS := dictionary-learning==0.1.0

.PHONY: demo test test-slow bench install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,peers]'
	$(BIN)/pip install --quiet -c constraints.txt --no-deps $(NO_DEPS_PEERS)
	$(BIN)/python -c "import torch; v = torch.__version__; assert v.startswith('2.13.0'), f'torch {v} replaced 2.13.0'"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/monosemantic bench toy

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
