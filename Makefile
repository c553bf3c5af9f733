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

# Until `wsca demo` exists: WSC of a malignancy probe against scanner, view and BI-RADS probes on
# PCA features of the BUS-BRA pixels (real images and metadata from ../shared/data).
demo: $(STAMP)
	$(BIN)/python experiments/busbra_pixel_features.py --data-dir $(DATA_DIR) --out runs/demo/inputs
	$(BIN)/wsca analyze --embeddings runs/demo/inputs/embeddings.npy --metadata runs/demo/inputs/metadata.csv \
	    --primary malignant --group-column case --bootstrap 200 --permutations 200 --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/probe_throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info
