# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv with the CPU build of torch that lies on this disk, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= $(if $(LUNGSEG_DATA),$(LUNGSEG_DATA),../shared/data)
TORCH  ?= torch==2.13.0

.PHONY: demo evaluate test lint venv bench-env clean

$(BIN)/lungseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

venv: $(BIN)/lungseg

# Segments two X-rays (one per hospital) with the shipped model: masks, overlays, lung areas.
demo: venv
	$(BIN)/lungseg predict $(DATA)/montgomery/images/MCUCXR_0001_0.png \
		$(DATA)/shenzhen/images/CHNCXR_0001_0.png -o demo-out --overwrite
	cat demo-out/results.csv

# The shipped model's test metrics per source (486 X-rays of four sources), then the paper's
# Table 1 metrics on the 211 test X-rays of the paper split (a subset of the first).
evaluate: venv
	$(BIN)/lungseg evaluate --data $(DATA) --split $(DATA)/splits/multi_source.json --subset test
	$(BIN)/lungseg evaluate --data $(DATA) --split $(DATA)/splits/paper_433.json --subset test

test: venv lint
	LUNGSEG_DATA=$(DATA) $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

# Benchmarks compare against smp and MONAI; smp needs torchvision, which loads here only beside
# torch 2.14.1, so they get their own environment (see benchmarks/README.md).
.venv-bench/bin/python:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --upgrade pip
	.venv-bench/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	.venv-bench/bin/pip install --quiet segmentation-models-pytorch monai
	.venv-bench/bin/pip install --quiet -e ".[onnx]"

bench-env: .venv-bench/bin/python

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
