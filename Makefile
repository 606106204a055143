# greencpn developer commands. Every target builds .venv from pyproject.toml itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs the suite on pytest-xdist workers: most of its time is wall time (real Slurm
# scheduling loops, daemon periods, service start-up), not CPU. Whole files per worker
# (loadfile: a module's real cluster starts once), files with `slow` tests handed out first
# (tests/conftest.py). `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2
PYTEST_XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
# `make lint` fails on any run of this many same lines in two files (pylint's duplicate-code,
# the check of the `duplicates` tool minus its same-shape pairs). 11 is the least the tree
# passes: greencpn/config/jobs.py's job CSV columns ~ data/example/make_example.py's CSV header
# share 10 lines (the example generator stands alone, without importing greencpn); below that,
# 9-line pairs in tests and bench fixtures (issue 13).
DUP_MIN_LINES ?= 11

.PHONY: demo test bench lint venv clean mutation mutation-sample

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing greencpn and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@$(BIN)/python -m pip install --quiet -e '.[dev]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	touch $(STAMP)

venv: $(STAMP)

## Plan the bundled example fleet for the next 48 h and print the plan and its saving.
demo: $(STAMP)
	$(BIN)/greencpn plan --config data/example/fleet.toml --out out/

## Run the whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

## Benchmarks (long); results go to bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## Mutation testing of greencpn/optimize/ and greencpn/report/ (mutmut, config in pyproject.toml).
## The whole scope is ~10,000 mutants (hours on 2 cores); sample with e.g.
##   make mutation MUTANTS='greencpn.optimize.budget* greencpn.report.render.x_headline*'
## Results: $(BIN)/mutmut results; record the counts in bench/results/mutation.md.
MUTANTS ?=
mutation: $(STAMP)
	GREENCPN_HYPOTHESIS_EXAMPLES=3 $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut export-cicd-stats 2>/dev/null || true
	@$(BIN)/mutmut results

## A seeded random sample of the mutants above, N/2 from optimize/ and N/2 from report/, run
## against mutmut's per-mutant test selection (needs mutants/mutmut-stats.json from one
## `make mutation` run), survivors re-checked against the whole selection (a full run each),
## kill share per package
## with a Wilson 95 % interval: bench/results/mutation_sample.{txt,json}, see
## tools/mutation_sample.py. Example: make mutation-sample SEED=20261203 N=60
## TAG=20261205 writes bench/results/mutation_sample*_20261205* instead (keeps older samples)
SEED ?= 20261203
N ?= 60
TAG ?=
mutation-sample: $(STAMP)
	$(BIN)/python tools/mutation_sample.py all --seed $(SEED) --n $(N) $(if $(TAG),--tag $(TAG))

lint: $(STAMP)
	$(BIN)/ruff check greencpn tests bench models tools
	$(BIN)/ruff format --check greencpn tests bench models tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python tools/module_sizes.py greencpn
	$(BIN)/pylint --recursive=y --disable=all --enable=duplicate-code --score=n \
		--min-similarity-lines=$(DUP_MIN_LINES) --ignore-comments=y --ignore-docstrings=y \
		--ignore-imports=y --ignore-signatures=y greencpn tests bench models data

clean:
	rm -rf $(VENV) out mutants
