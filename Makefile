# `make demo`, `make test`, `make bench`: each creates .venv from nothing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Tests and CI read the upstream dataset files from ../shared/data when it exists (see data/README.md).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export CLUE_DATA_DIR ?= $(SHARED_DATA)
endif
# Two OpenMP runtimes (TensorFlow's and scikit-learn's) spin-wait against each other on small machines.
export OMP_WAIT_POLICY ?= PASSIVE
export TF_CPP_MIN_LOG_LEVEL ?= 2
export MPLBACKEND ?= Agg

DATASET ?= digits

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Two pytest-xdist workers (one per core of the reference CI machine); PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m CLUE.demo --dataset $(DATASET)

bench: $(STAMP)
	$(PY) benchmarks/bnn_predict.py
	$(PY) benchmarks/clue_speed.py
	$(PY) benchmarks/chains_speed.py
	$(PY) benchmarks/train_step.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
