# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,spark,text,serve
DEMO   := runs/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean

$(BIN)/socialfeat: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/socialfeat

demo: install
	$(BIN)/socialfeat demo --out $(DEMO)

test: install
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/demo.py

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
