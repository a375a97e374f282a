# The README's two commands: `make demo` (set up, then run the demo) and `make test` (set up, then run the tests).
# Setup makes a virtual environment in .venv and installs torch from PyTorch's CPU index before the package, so
# nothing pulls the multi-GB CUDA build that a bare `pip install torch` brings on Linux (only torch itself comes from
# that index; its dependencies from the default one), then the triton that the tests were run with (the `dev`
# extra only asks for triton>=3.6, so it never downgrades a newer torch).
# Override with e.g. `make test TORCH_SPEC=torch==2.11.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TRITON_SPEC ?= triton==3.6.0; platform_system == 'Linux' and platform_machine == 'x86_64'
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --extra-index-url $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" "$(TRITON_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/mta demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
