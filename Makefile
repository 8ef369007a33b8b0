# make demo: create .venv, install, run the batch pipeline on sample_data/ into results/
# make test: create .venv, install with test extras, run pytest
# make validate: rerun every validation script that writes into docs/ (real data in DATA; tens of minutes)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data

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
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

bench: $(VENV)/.installed-test
	$(BIN)/python scripts/bench_gmm.py

# Every script that rewrites a doc in docs/ (tables and figures); Atropos runs from .venv-peers/
# (created on first use by scripts/_peers.py). validate_thick.py and validate_bids_formats.py only
# print their tables (docs/validation.md and docs/validation_bids_formats.md record one run).
validate: $(VENV)/.installed-test
	$(BIN)/python scripts/validate_tissue.py --data $(DATA) --out docs/validation_tissue.md
	$(BIN)/python scripts/validate_degraded.py --data $(DATA) --out docs/validation_degraded.md
	$(BIN)/python scripts/validate_ibsr.py --data $(DATA) --out docs/validation_ibsr.md
	$(BIN)/python scripts/ibsr_ceiling.py --data $(DATA) --out docs/validation_ibsr_ceiling.md
	$(BIN)/python scripts/validate_ibsr_thick.py --data $(DATA) --out docs/validation_ibsr_thick.md
	$(BIN)/python scripts/validate_inputs.py --data $(DATA) --out docs/validation_inputs.md
	$(BIN)/python scripts/validate_subsets.py --data $(DATA) --out docs/validation_subsets.md
	$(BIN)/python scripts/validate_skullstrip.py --data $(DATA) --out docs/validation_skullstrip.md
	$(BIN)/python scripts/robustness_skullstrip.py --data $(DATA) --write
	$(BIN)/python scripts/robustness_tumor.py --data $(DATA) --write
	$(BIN)/python scripts/validate_tumor.py --data $(DATA) --out docs/validation_tumor.md
	$(BIN)/python scripts/figure_clinical.py --data $(DATA) --out docs/validation_clinical.md
	@echo "docs/validation_*.md and docs/figures/ rewritten; review with git diff docs/"

clean:
	rm -rf results build *.egg-info .pytest_cache
