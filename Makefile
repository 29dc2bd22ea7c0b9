# The two user-facing commands: `make repro` and `make test`.
# Each creates .venv from requirements.txt when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: repro test venv compare compare-run compare-queue compare-table compare-report results metrics-all clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

repro: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

# one pytest worker per core (at most TEST_WORKERS), a whole test file per worker at a time:
# a file's module fixtures (a trained tiny model) are built once
TEST_WORKERS ?= 4
test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n auto --maxprocesses $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Strategy comparison: queue one experiment per strategy and seed, run them
# (each in a clean copy of the commit, JOBS at a time), print the table.
# `full` trains once on the whole pool: its rounds are removed.
# Extra variants: make compare-queue STRATEGIES=art EXP_SUFFIX=-uncapped EXP_ARGS="-S sampling.pool_cap_factor=0"
# A finished experiment of the same name is replaced only on this commit (its full ref): a plain
# `dvc exp remove NAME` would take the one experiment of that name on any older commit.
STRATEGIES ?= random balanced art full
SEEDS ?= 0 1 2 3 4
JOBS ?= 2
EXP_SUFFIX ?=
EXP_ARGS ?=
# seconds between two looks at the queue in compare-run
QUEUE_POLL ?= 30
DVC := PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc
# JOBS experiments run at a time, each with torch threads = its share of the cores (at least 1).
# More OpenMP threads than cores stall each other: two experiments whose predict stages each took
# both cores ran 5-8x slower; two one-thread experiments on 2 cores each take as long as one alone,
# so a comparison finishes in about half the time (docs/RESULTS.md "Cost of `make compare`").
# The cores this process may use: nproc without the OpenMP variables, which it would otherwise report instead.
THREADS_PER_JOB = $(shell n=$$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc); t=$$((n / $(JOBS))); echo $$((t > 0 ? t : 1)))
# `full`: no loop rounds, and the final model trains on the seed selection (round 0)
ROUND_REMOVALS = $(shell $(BIN)/python -c "import yaml; print(' '.join(f'-S ~sampling.rounds.{k} -S ~train_on.{k}' for k in yaml.safe_load(open('params.yaml'))['sampling']['rounds']))")
# balanced and random read no model: with ONE_SHOT=1 they draw the whole budget of the seed and every
# round (budget_fraction x (rounds + 1), from params.yaml) in one selection and skip the round models
# (README "Experiments and comparisons"). ONE_SHOT=0 runs them through the rounds like art.
# An EXP_ARGS that changes sampling.budget_fraction or the rounds needs ONE_SHOT=0.
ONE_SHOT ?= 1
ONE_SHOT_FRACTION = $(shell $(BIN)/python -c "import yaml; s = yaml.safe_load(open('params.yaml'))['sampling']; print(f\"{s['budget_fraction'] * (len(s['rounds']) + 1):.10g}\")")

compare: compare-queue
	$(MAKE) --no-print-directory compare-run
	$(MAKE) --no-print-directory compare-table
	-$(MAKE) --no-print-directory compare-report

# Run every queued experiment, JOBS at a time, each with its share of the cores. DVC's queue
# workers can stop while experiments are still queued (treeverse/dvc#10562; seen here with JOBS=2):
# `dvc queue start` is repeated until nothing is queued, but only while fewer than JOBS experiments
# run. What runs is counted from the experiment processes on this machine, not from DVC's worker
# status: under load that status missed busy workers (seen here: "0 active" with three running, and
# `queue start` then added workers of the same names, five experiments on two cores). Then the
# running experiments are waited for; what did not succeed is listed.
# The shared pretraining runs first, in the workspace with every core: the experiments take it from
# the run cache. Left to the queue, the first JOBS experiments each pretrain, with pretrain_tiny's
# cpu_threads each: 400 of 2000 steps in 23 min for two on 2 cores, against 10 min for all of it alone.
# With EXP_ARGS (a profile may change pretrain_tiny) it runs as a temporary experiment of that stage
# with the same arguments, which fills the same run cache, and the experiment is then removed.
# ([e]: the pattern must not match the recipe's own shell, whose command line holds it)
RUNNING_EXPERIMENTS ?= pgrep -fc '[e]xp exec-run --infofile $(CURDIR)/.dvc/tmp/exps/'
SHARED_PRETRAINING = pretrain$(EXP_SUFFIX)-shared
# That temporary experiment reads every output of the workspace's dvc.lock from the cache (DVC reads the
# report's plots of the lock even for one stage): without them it fails after pretraining. Refused before.
LOCK_OUTPUTS_CACHED = if $(DVC) data status --json | grep -q '"not_in_cache"'; then \
	  echo "make compare-run: outputs of dvc.lock are not in the DVC cache (dvc data status); run make repro first" >&2; \
	  exit 1; fi
compare-run: $(STAMP)
	@if $(DVC) stage list --name-only 2>/dev/null | grep -q '^pretrain-tiny@'; then \
	  $(if $(strip $(EXP_ARGS)),$(LOCK_OUTPUTS_CACHED); $(call REMOVE_EXPERIMENT,$(SHARED_PRETRAINING)); \
	    $(DVC) exp run --temp -n $(SHARED_PRETRAINING) pretrain-tiny $(EXP_ARGS) || exit 1; \
	    $(call REMOVE_EXPERIMENT,$(SHARED_PRETRAINING)),$(DVC) repro pretrain-tiny || exit 1); \
	fi
	@export OMP_NUM_THREADS=$(THREADS_PER_JOB); \
	while $(DVC) queue status 2>/dev/null | grep -q ' Queued$$'; do \
	  if [ "$$($(RUNNING_EXPERIMENTS))" -lt $(JOBS) ]; then $(DVC) queue start -j $(JOBS) >/dev/null 2>&1; fi; \
	  sleep $(QUEUE_POLL); \
	done; \
	while [ "$$($(RUNNING_EXPERIMENTS))" -gt 0 ]; do sleep $(QUEUE_POLL); done
	@$(DVC) queue status | grep -v ' Success$$'
	@! $(DVC) queue status | grep -q ' Failed$$' || echo "compare-run: some experiments failed, above (dvc queue logs <task>)" >&2

# Removes the experiment $(1) of this commit, if any (by its full ref, see above)
REMOVE_EXPERIMENT = ref=refs/exps/$$(git rev-parse HEAD | sed 's|^\(..\)|\1/|')/$(1); \
	  if git show-ref -q --verify $$ref; then $(DVC) exp remove -q $$ref >/dev/null 2>&1 || true; fi
# The round removals come after EXP_ARGS: DVC refuses to set a key (a profile's train_on.1.min_steps)
# under one already removed, and the one-shot strategies must not get the round models back.
compare-queue: $(STAMP)
	@for seed in $(SEEDS); do for strategy in $(STRATEGIES); do \
	  case $$strategy in random) first=random;; full) first=full;; *) first=balanced;; esac; \
	  case $$strategy@$(ONE_SHOT) in full@*) rounds="$(ROUND_REMOVALS) -S train_on.final.selection=0";; \
	    balanced@1|random@1) rounds="$(ROUND_REMOVALS) -S train_on.final.selection=0 -S sampling.budget_fraction=$(ONE_SHOT_FRACTION)";; \
	    *) rounds="";; esac; \
	  name=$$strategy$(EXP_SUFFIX)-seed$$seed; \
	  $(call REMOVE_EXPERIMENT,$$name); \
	  $(DVC) exp run --queue -n $$name -S sampling.strategy=$$strategy \
	    -S sampling.seed_strategy=$$first -S sampling.seed=$$seed -S train.seed=$$seed $(EXP_ARGS) $$rounds || exit 1; \
	done; done

# The tables of every experiment run by the workspace's pipeline (dvc.lock: same code and
# settings up to predict), from any commit; ALL=1: other pipelines' too, kept apart.
compare-table: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m reltune.evaluation.compare $(if $(ALL),--all-pipelines)

# Rebuild report/index.html so it shows the same tables (needs the workspace run of `make repro`).
compare-report: $(STAMP)
	$(DVC) repro --single-item --force report

# The compared results of every experiment of this commit (issue 14 §5): per evaluated
# dataset and its blind control R/mR/gR/mgR at each K and unique/unseen predicates, with
# the strategy and seeds; `dvc exp show` alone also lists every parameter and dep hash.
RESULT_COLUMNS = ^(Experiment|metrics/[^:/]+\.json:(m?g?R@[0-9]+|unique_predicates|unseen_predicates)|sampling\.(strategy|seed)|train\.seed)$$
results: $(STAMP)
	$(DVC) exp show --drop '.*' --keep '$(RESULT_COLUMNS)'

# Everything else a run measured (not DVC metrics, so that `dvc metrics show` stays
# readable): every evaluation key and setting (metrics/details: ng recalls, mR_vocab, counts,
# similarity), timing per stage, pretraining accuracy, validation recall per round.
metrics-all: $(STAMP)
	$(DVC) metrics show $(wildcard metrics/*.json metrics/details/*.json metrics/timing/*.json data/loop/round_*/val_recall.json)

clean-venv:
	rm -rf $(VENV)
