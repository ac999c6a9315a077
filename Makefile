# The two commands of the README's quick start, and the benchmark.
# Needs only python3 (3.11) and make; everything else goes into .venv.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m zmqrelay.demo

test: $(STAMP)
	$(PY) -m twisted.trial -j2 tests

bench: $(STAMP)
	$(PY) bench/relaybench.py --write docs/BENCHMARKS.md

clean:
	rm -rf $(VENV) _trial_temp* build *.egg-info twisted/plugins/dropin.cache
