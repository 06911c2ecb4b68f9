# The README's two commands. Each sets itself up on a fresh machine:
# it creates .venv and installs the package with its dev extras when setup.cfg changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | sha1sum | cut -c1-10)
DEMO_DIR ?= log/demo/$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test lint bench-eval

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

## make demo: synthetic Market-format data -> train configs/demo.yaml -> evaluate -> table
demo: $(STAMP)
	$(PY) tools/train_net.py --config-file configs/demo.yaml data.save_dir $(DEMO_DIR)

## make test: the whole test suite (CPU, synthetic data only)
test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check reid_ir tools tests

bench-eval: $(STAMP)
	$(PY) tools/benchmark_eval.py --scale market --dim 512
