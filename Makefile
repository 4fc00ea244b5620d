# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,spark,text,serve
DEMO   := runs/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean lightfm

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

# LightFM (the optional peer row of `content`): its sdist's setup.py fails under pip's build isolation, so build the
# wheel directly with setuptools < 70, Cython and wheel, then install it.
LIGHTFM_SDIST := https://files.pythonhosted.org/packages/1f/96/5ec230f5c27811534af0faaa8525f11c1000ee1c24c8a82c0546d0724aea/lightfm-1.17.tar.gz

lightfm: install
	$(BIN)/python -m pip install --quiet "setuptools<70" Cython wheel
	rm -rf build/lightfm && mkdir -p build/lightfm
	curl -sSfL -o build/lightfm/lightfm-1.17.tar.gz $(LIGHTFM_SDIST)
	cd build/lightfm && tar xzf lightfm-1.17.tar.gz && cd lightfm-1.17 && ../../../$(BIN)/python setup.py -q bdist_wheel
	$(BIN)/python -m pip install --quiet build/lightfm/lightfm-1.17/dist/lightfm-*.whl
