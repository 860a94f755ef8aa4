# `make demo` and `make test` work on a fresh machine with only Python >= 3.10: they create .venv,
# install the package with torch pinned by constraints.txt, then run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# peer libraries for the interop tests whose declared dependencies would replace the pinned torch
# (dictionary-learning -> nnsight, torchvision); the modules the tests use need only torch and einops
NO_DEPS_PEERS := dictionary-learning==0.1.0

.PHONY: demo view toy test test-unit test-slow lint bench install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,peers,lint]'
	$(BIN)/pip install --quiet -c constraints.txt --no-deps $(NO_DEPS_PEERS)
	$(BIN)/python -c "import torch; v = torch.__version__; assert v.startswith('2.13.0'), f'torch {v} replaced 2.13.0'"
	touch $(STAMP)

install: $(STAMP)

# The main job on the built-in model: train the SAE of the exact-equality study (examples/equality_ablation.md:
# the embedding, layers.0.resid.pre, where `=` and `≈` are still one feature each; 768 features, k 8), evaluate
# it spliced into the model, analyse every feature (labels, top contexts, ...) into runs/demo/features, then
# serve the dashboard. A finished demo run is reused: only the dashboard starts (`make demo RETRAIN=1` trains
# anew, replacing runs/demo and the experiments in it).
DEMO_RUN := runs/demo
DEMO_DONE := $(DEMO_RUN)/.demo-finished
ifneq ($(RETRAIN),)
.PHONY: $(DEMO_DONE)
endif
$(DEMO_DONE): | $(STAMP)
	rm -rf $(DEMO_RUN)
	$(BIN)/monosemantic train --model builtin --hookpoint layers.0.resid.pre --arch topk --expansion-factor 4 --k 8 \
		--tokens 2M --out $(DEMO_RUN)
	$(BIN)/monosemantic eval $(DEMO_RUN)
	$(BIN)/monosemantic analyze $(DEMO_RUN) --tokens 200k --loss-effects
	touch $@

demo: $(DEMO_DONE)
	@echo "serving the demo run $(DEMO_RUN) (\`make demo RETRAIN=1\` to train it anew)"
	$(BIN)/monosemantic view $(DEMO_RUN)

# The dashboard in seconds: the finished demo run if there is one (`make demo` made it), else a
# pretrained SAE shipped with the package (layer 3's residual stream; no training;
# the first use analyses its features into ~/.cache/monosemantic/builtin, or $$MONOSEMANTIC_CACHE/builtin,
# in under a minute on 2 cores).
view: $(STAMP)
	@if [ -f $(DEMO_DONE) ]; then echo "serving the demo run $(DEMO_RUN)"; \
		exec $(BIN)/monosemantic view $(DEMO_RUN); \
	else echo "no finished demo run in $(DEMO_RUN) (\`make demo\` trains one): serving the built-in SAE"; \
		exec $(BIN)/monosemantic view builtin; fi

toy: $(STAMP)
	$(BIN)/monosemantic bench toy

# The dashboard's browser tests drive Debian's chromium with Playwright (Playwright's own browser
# download needs the internet); installed here when missing (CI runs as root).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

# both tiers run on every core (pytest-xdist, one worker per core): most tests are a process start, a
# small training or a browser page, single-threaded for much of their time
test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -m "not slow" -q -n auto

# no subprocess, server, browser, torchrun or whole-run training (tests/conftest.py sets the marker): under a minute on 2 cores
test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit -q

test-slow: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -m slow -q -n auto

# ruff's and mypy's settings (which packages mypy checks, how strictly) are in pyproject.toml
LINT_PATHS := monosemantic tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
