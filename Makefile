# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv with the CPU build of torch that lies on this disk, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= $(if $(LUNGSEG_DATA),$(LUNGSEG_DATA),../shared/data)
TORCH  ?= torch==2.13.0

.PHONY: demo test lint venv clean

$(BIN)/lungseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

venv: $(BIN)/lungseg

demo: venv
	$(BIN)/lungseg data check $(DATA) --split $(DATA)/splits/paper_433.json

test: venv
	LUNGSEG_DATA=$(DATA) $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
