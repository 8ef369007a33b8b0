# make demo: create .venv, install, run the batch pipeline on sample_data/ into results/
# make test: create .venv, install with test extras, run pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean bench validate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/segment batch --input sample_data --out results --config configs/demo.yaml
	@echo "results: results/report.csv, results/summary.csv, results/<case>/overlay.png"

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadscope -m "not serial"
	$(BIN)/python -m pytest -q -m serial

bench: $(VENV)/.installed-test
	$(BIN)/python scripts/bench_gmm.py

clean:
	rm -rf results build *.egg-info .pytest_cache
