# vsp: `make demo` runs the whole pipeline on the generated demo world; `make test` runs the tests.
# Both set up .venv first (Python >= 3.11 and pip are all a fresh machine needs).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
VSP    := $(VENV)/bin/vsp
TORCH  ?= torch==2.14.1 torchvision==0.29.1
DEMO   ?= demo-run
# test processes (pytest-xdist; whole files per worker, so module fixtures are built once)
WORKERS ?= 2

.PHONY: setup demo test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev,glove,timm,clip,hf]'
	touch $@

demo: setup
	$(VSP) demo --out $(DEMO)

test: setup
	$(PY) -m pytest -n $(WORKERS) --dist loadfile

test-fast: setup
	$(PY) -m pytest -n $(WORKERS) --dist loadfile -m "not slow"

lint: setup
	$(VENV)/bin/ruff check vsp cluster jobs tests benchmarks
	$(VENV)/bin/ruff format --check vsp cluster jobs tests benchmarks

bench: setup
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_decode.py
	$(PY) benchmarks/bench_permutations.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
