# Two commands do the whole set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: run test test-all bench bench-best bench-record lint format clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[web,onnx,dev]'
	touch $(STAMP)

run: $(STAMP)  ## train the default model on embedded MNIST into runs/main
	$(BIN)/mnistlab train --preset fast --out runs/main --force

test: $(STAMP)  ## lint, format check, the test suite and the package's >>> examples (slow tests left out)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not slow" -n auto --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: $(STAMP)  ## benchmarks: medians of repeated runs, ratios to a plain PyTorch loop
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

bench-best: $(STAMP)  ## the CNN preset, 3 seeds on MNIST and Fashion-MNIST (about 5 minutes)
	$(BIN)/python -m benchmarks best

bench-record: $(STAMP)  ## the record preset, 3 seeds, with TTA and as an ensemble (about 10 minutes with bf16 units)
	$(BIN)/python -m benchmarks record
