# The README's two commands: `make bench` (the main job, small CPU preset) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 has a CPU wheel on this project's machines; a bare `torch` may pull a CUDA build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install bench test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/embodied-bench $(ARGS)

# one pytest worker per core (pytest-xdist); the Ray tests share one worker (xdist_group)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
