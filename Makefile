# Two commands for a newcomer: `make quickstart` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SWEEP   ?= quickstart-$(shell date +%Y%m%d-%H%M%S)
STORE   := runs/sweeps

.PHONY: install quickstart test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded digits-LT default: a 16-trial sweep (Optuna TPE + ASHA on a local
# Ray), the best config exported, and one final training run from it.
quickstart: $(STAMP)
	$(BIN)/hybridlt sweep configs/sweeps/quickstart.yaml --set name=$(SWEEP) --set storage=$(STORE)
	$(BIN)/hybridlt export-best $(STORE)/$(SWEEP)/results -o $(STORE)/$(SWEEP)/best.yaml
	$(BIN)/hybridlt train --config $(STORE)/$(SWEEP)/best.yaml --out $(STORE)/$(SWEEP)/final
	@echo "results: $(STORE)/$(SWEEP)/results (Parquet); best config: $(STORE)/$(SWEEP)/best.yaml"
	@echo "dashboard: $(BIN)/hybridlt dashboard $(STORE)/$(SWEEP)/results   (then open http://127.0.0.1:8050/)"

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check hybridlt model data sweep dashboards tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
