# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use; `make setup` only installs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The shared test collections live beside the project root; override with CLSR_DATA=...
export CLSR_DATA ?= $(abspath $(CURDIR)/../shared/data)
# Keep clsr's own caches (embeddings) inside the project, not under $HOME.
export CLSR_CACHE ?= $(CURDIR)/cache

# Pyserini 2.x needs Python >= 3.12; `make test-py312` runs the tests on that line in its own venv.
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.12)
VENV312 := .venv312

.PHONY: setup demo test test-bf16 test-py312 test-scale test-browser bench bench-scale clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is named in the same command so pip takes the local CPU wheel, never CUDA builds.
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/clsr demo --dataset scifact

# ruff first: a lint failure ends the target in seconds, before the ~5 minutes of tests.
test: setup
	$(BIN)/ruff check clsr tests benchmarks scripts
	$(BIN)/python -m pytest -q

# The numerics tests again as a CPU with bf16 (AVX512-BF16, AMX) would run them, on any CPU: CLSR_DTYPE=bf16
# makes dtype auto mean bf16 (torch emulates it where the CPU lacks it; OpenVINO then runs fp32 and records it).
# CI runs it after `make test`, so a test that holds on one kind of CPU only fails here, not on another machine.
test-bf16: setup
	CLSR_DTYPE=bf16 $(BIN)/python -m pytest -q -m numerics

# The same tests on Python 3.12 with Pyserini 2.x (Anserini 2.3). Kept out of `make test`: there is no
# CPU build of torch for 3.12 on this machine, so pip takes PyPI's, which pulls CUDA libraries
# (~4 min and 6.8 GB for the venv the first time; see docs/pyserini.md).
test-py312: $(VENV312)/.installed
	$(VENV312)/bin/python -m pytest -q

$(VENV312)/.installed: pyproject.toml
	test -x $(VENV312)/bin/python || $(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install --quiet --upgrade pip
	$(VENV312)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

# The Milvus backend on real Milvus Lite and encoding on Ray (local mode): the milvus and ray extras,
# kept out of `make test`: installing them adds ~40 s and ~700 MB to .venv, and the tests take 3-6 minutes.
test-scale: setup
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e '.[dev,milvus,ray]'
	$(BIN)/python -m pytest -q -m scale tests/test_milvus.py tests/test_ray_encoding.py

# Milvus export/search against Lucene on SciFact and synthetic 100k/1M sets, Ray encoding throughput (~40 min).
bench-scale: test-scale
	$(BIN)/python benchmarks/scale.py --out benchmarks/results/scale.json

# The explorer's end-to-end test in headless Chromium (Debian's, installed by the script; needs apt).
test-browser: setup
	scripts/install_chromium.sh
	$(BIN)/python -m pip install --quiet -e '.[dev,browser]'
	$(BIN)/python -m pytest -q -m browser tests/test_browser.py

# Quality tables with the bundled SAE (zero-shot: it never saw these collections) and adapted to each,
# then the leave-one-out transfer study; the README's results block is generated from the JSON.
bench: setup
	$(BIN)/python benchmarks/quality.py --dataset scifact --out benchmarks/results/scifact.json
	$(BIN)/python benchmarks/quality.py --dataset nfcorpus --out benchmarks/results/nfcorpus.json
	$(BIN)/python benchmarks/quality.py --dataset scifact --adapt --out benchmarks/results/scifact-adapted.json
	$(BIN)/python benchmarks/quality.py --dataset nfcorpus --adapt --out benchmarks/results/nfcorpus-adapted.json
	$(BIN)/python benchmarks/transfer.py --dataset scifact --dataset nfcorpus --out benchmarks/results/transfer.json
	$(BIN)/python benchmarks/mix_rule.py --out benchmarks/results/mix-rule.json
	$(BIN)/python benchmarks/engines.py --words --out benchmarks/results/engines-words.json
	$(BIN)/python benchmarks/readme_results.py

clean:
	rm -rf $(VENV) $(VENV312) cache runs benchmarks/work
