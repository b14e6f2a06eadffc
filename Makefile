# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Every install takes its exact versions from requirements.lock; `make lock` refreshes it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
# The newest releases pyproject.toml admits, in a venv of their own (`make test-latest`, `make lock`).
LATEST := .venv-latest

.PHONY: venv demo test test-fast test-latest lock bench mutation clean

# pip itself first, at the locked version: older pips know no --build-constraint, and without it
# the isolated build of an sdist would take whatever setuptools is newest.
define install_locked
	$(1)/pip install --quiet --constraint $(LOCK) pip
	$(1)/pip install --quiet --constraint $(LOCK) --build-constraint $(LOCK) -e '.[test,bench]'
endef

define check_venv
	$(1)/bin/python -c "import torchvision.ops, ultralytics, kfp" || { echo "torch/torchvision pair broken in $(1)"; exit 1; }
endef

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(call install_locked,$(BIN))
	$(call check_venv,$(VENV))
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/pogona run --local --demo

test: $(STAMP) tools
	$(BIN)/pogona compile --check
	$(BIN)/python -m pytest -q

# The tests that neither train nor wait (a minute or two): the slow tier is marked `slow` (pyproject.toml).
test-fast: $(STAMP) tools
	$(BIN)/python -m pytest -q -m "not slow"

# CI against the newest releases pyproject.toml admits, in a fresh venv: an upgrade is a decision.
# Where pip's own configuration caps a package (a constraint in pip.conf), that cap still holds;
# PIP_CONFIG_FILE=/dev/null make test-latest lifts it.
test-latest: tools
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet --upgrade -e '.[test,bench]'
	$(call check_venv,$(LATEST))
	$(LATEST)/bin/pip freeze --all --exclude-editable > $(LATEST)/versions.txt
	@echo "versions that differ from $(LOCK) (< locked, > newest):"
	@grep -v '^#' $(LOCK) | diff - $(LATEST)/versions.txt | grep '^[<>]' || echo "  none"
	$(LATEST)/bin/pogona compile --check
	$(LATEST)/bin/python -m pytest -q

# Refresh the lock: the newest releases, written only after the whole suite passed with them.
lock: test-latest
	{ grep '^#' $(LOCK); cat $(LATEST)/versions.txt; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	@echo "$(LOCK) refreshed; rebuild $(VENV) with: rm -rf $(VENV) && make venv"

bench: $(STAMP)
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/sanity.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/int8.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/batch_policy.py
	$(BIN)/python bench/gpu.py

# Mutation testing of the rule modules ([tool.mutmut] in pyproject.toml): each mutant reruns the tests that
# reach it, so this takes long and is no part of `make test`. mutmut keeps its results in mutants/ and resumes
# from them; scripts/mutation_score.py prints the score per module and fails below 90%.
# The rules, by mutmut's mutant names: the content checks, the atomic writes, the promotion decision and pointer
# swap, the dead-run detector, the snapshot fingerprint, the attempt key and the skip rule.
MUTATION_JOBS ?= 2
MUTATION_RULES := \
	'components.storage.checksums.x_file_matches__mutmut_*' 'components.storage.checksums.x_content_checks__mutmut_*' \
	'components.storage.checksums.x__etag_is_md5__mutmut_*' 'components.storage.checksums.x_server_checksum__mutmut_*' \
	'components.storage.atomic.x_write_verified__mutmut_*' 'components.storage.atomic.x_write_atomic__mutmut_*' \
	'components.storage.atomic.x__atomic_target__mutmut_*' \
	'components.publishing.publish.x_decide__mutmut_*' 'components.publishing.publish.x_promote__mutmut_*' \
	'components.training.deadrun.*' \
	'components.data.snapshot.x_fingerprint__mutmut_*' 'components.data.snapshot.x__entry_line__mutmut_*' \
	'components.data.snapshot.x__entries_only_fingerprint__mutmut_*' \
	'components.publishing.attempts.*'
# mutmut forks a process per mutant from one that has imported torch: an OpenMP thread pool alive in the parent
# deadlocks the child's first parallel op (seen building a YOLO model), so torch runs single-threaded here.
mutation: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTATION_RULES)
	$(BIN)/python scripts/mutation_score.py $(MUTATION_RULES)

clean:
	rm -rf $(VENV) $(LATEST) .pogona

include make/images.mk
include make/kind.mk
