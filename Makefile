# The two set-up commands of the README: `make demo` and `make test`.
# Both create (or reuse) .venv, install torch first and then the package, so that no
# dependency can pull another torch or CUDA wheels. A torch that the system Python already
# has (e.g. a CUDA build on a GPU box) is kept: the venv then sees the system site-packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "keeping the installed torch: $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/mddpm demo --out demo_out

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo_out
