# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -c "import torchvision.ops, ultralytics, kfp" || { echo "torch/torchvision pair broken in $(VENV)"; exit 1; }
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/pogona run --local --demo

test: $(STAMP) tools
	$(BIN)/pogona compile --check
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/sanity.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/validate.py

clean:
	rm -rf $(VENV) .pogona

include make/kind.mk
