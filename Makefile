# The two set-up commands of the README: `make demo` and `make test`.
# Both create (or reuse) .venv, install torch first and then the package (the demo: the runtime only;
# the tests: also the dev extra), so that no
# dependency can pull another torch or CUDA wheels. A torch that the system Python already
# has (e.g. a CUDA build on a GPU box) is kept: the venv then sees the system site-packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test browser install clean

$(VENV)/.installed: pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "keeping the installed torch: $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	@touch $@

# the test extra (pytest, ruff, torchio for a parity test, mlflow for the tracking tests) on top of the runtime
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/mddpm demo --out demo_out

test: $(VENV)/.installed-test browser
	$(PY) -m pytest

# The report's browser test needs chromium: installed here when missing and possible (root with
# apt-get); otherwise pytest skips that test and says so in its last lines (under CI=true it fails).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "installing chromium for the browser test" && \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed (that needs root and apt-get): the browser test will be skipped (under CI=true it fails)"

clean:
	rm -rf $(VENV) demo_out
