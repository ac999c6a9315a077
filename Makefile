# The two commands of the README's quick start, and the benchmark.
# Needs only python3 (3.11) and make; everything else goes into .venv.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-flood bench-idle bench-notify bench-all venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m zmqrelay.tools.demo

test: $(STAMP)
	$(PY) -m twisted.trial -j2 tests

# The bench extra (majortomo, for the comparison of issue 13); the benchmark
# still runs, and says so in its report, if it cannot be installed.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	-$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/relaybench.py --write docs/BENCHMARKS.md
	$(PY) bench/coalesce.py --write docs/BENCHMARKS.md
	$(PY) bench/onebyone.py --write docs/BENCHMARKS.md

# docs/FLOOD.md: the single-flooder run, each attack of issue 7, and the read-and-drop floor (a few minutes).
bench-flood: $(STAMP)
	$(PY) bench/floodbench.py --write docs/FLOOD.md
	$(PY) bench/attacks.py --write docs/FLOOD.md
	$(PY) bench/readfloor.py --write docs/FLOOD.md

# docs/BENCHMARKS.md: ten thousand idle clients on one cloud, a bare ROUTER and the heartbeat floor under the same load, and 1,000 and 3,000 for the growth table (about 4 minutes).
bench-idle: $(STAMP)
	$(PY) bench/idleclients.py --clients 10000 --counts 1000,3000 --write docs/BENCHMARKS.md

# docs/BENCHMARKS.md: notifications through proxy and cloud vs libzmq's proxies (about a minute).
bench-notify: $(STAMP)
	$(PY) bench/notifybench.py --write docs/BENCHMARKS.md

# Every benchmark: relays, floods and attacks, idle clients, notifications.
bench-all: bench bench-flood bench-idle bench-notify

clean:
	rm -rf $(VENV) _trial_temp* build *.egg-info twisted/plugins/dropin.cache
