# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev
DEMO   ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

$(BIN)/socialfeat: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/socialfeat

demo: install
	$(BIN)/socialfeat simulate --out $(DEMO)/platform
	$(BIN)/socialfeat ingest --interactions $(DEMO)/platform/interactions.csv --items $(DEMO)/platform/items.csv \
		--comments $(DEMO)/platform/comments.csv --out $(DEMO)/dataset

test: install
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
