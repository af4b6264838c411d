# `make demo` and `make test` build .venv themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of PyTorch, pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test env clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/cryolab demo -o demo_out
	@echo "Open demo_out/index.html"

test: env
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) demo_out .pytest_cache
