# Two commands for a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?= $(if $(WSCA_DATA_DIR),$(WSCA_DATA_DIR),../shared/data)

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The induced-shortcut demo: malignancy models on BUS-BRA (balanced vs biased scanner design,
# fine-tuned and multi-task); falls back to scikit-learn's digits when BUS-BRA is not found.
demo: $(STAMP)
	WSCA_DATA_DIR=$(DATA_DIR) $(BIN)/wsca demo --out runs/demo

# two workers, one test file each at a time (the suite is compile- and training-bound)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/probe_throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info
