# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly 2.13.0: the CPU wheel; nothing later may pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# lxt only for tests/test_attnlrp.py's reference check: its rule modules need torch alone, and
	# its declared tree (transformers, accelerate, bitsandbytes, open_clip_torch) could replace torch.
	$(PY) -m pip install -q --no-deps lxt==2.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/structattn demo

# One pytest-xdist worker per core (at most 4); a test file stays on one worker, so its trained
# fixtures are built once. tests/conftest.py gives each worker its share of torch threads.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# Benchmarks compare against their reference side by side (slow: the scipy loop fit alone takes ~16 min).
bench: $(STAMP)
	$(PY) bench/bench_loopfit.py
	$(PY) bench/bench_explain.py
	$(PY) bench/bench_latent.py
	$(PY) bench/bench_scoring.py

clean:
	rm -rf $(VENV) runs
