# The two user-facing commands: `make repro` and `make test`.
# Each creates .venv from requirements.txt when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: repro test venv compare compare-table clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

repro: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

# Strategy comparison: queue one experiment per strategy and seed, run them
# one after another (each in a clean copy of the commit), print the table.
STRATEGIES ?= random balanced art full
SEEDS ?= 0
DVC := PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc

compare: $(STAMP)
	@for seed in $(SEEDS); do for strategy in $(STRATEGIES); do \
	  case $$strategy in random) first=random;; full) first=full;; *) first=balanced;; esac; \
	  $(DVC) exp remove -q $$strategy-seed$$seed >/dev/null 2>&1 || true; \
	  $(DVC) exp run --queue -n $$strategy-seed$$seed -S sampling.strategy=$$strategy \
	    -S sampling.seed_strategy=$$first -S sampling.seed=$$seed -S train.seed=$$seed || exit 1; \
	done; done
	$(DVC) exp run --run-all -j 1
	$(MAKE) --no-print-directory compare-table

compare-table: $(STAMP)
	$(BIN)/python -m reltune.evaluation.compare

clean-venv:
	rm -rf $(VENV)
