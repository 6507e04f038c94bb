# The two set-up commands of the README are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast test-reliability bench models generalisation install kafka-jars alertmanager

install:
	@bash scripts/install-python.sh

kafka-jars:
	@python3 scripts/kafka-local fetch

# Debian's prometheus-alertmanager for the notify tests (installed with apt when missing)
alertmanager:
	@python3 scripts/alertmanager-local install

demo: install kafka-jars
	@bash scripts/demo.sh

test: install kafka-jars alertmanager
	$(PY) -m pytest -q -m "not scaleout"

test-fast: install
	$(PY) -m pytest -q -m "not kafka and not slow"

test-reliability: install kafka-jars
	$(PY) -m pytest -q -s -m reliability  # -s: each scenario prints its figures (RELIABILITY {...})

# Every bench/*.py (bench/_*.py are their shared helpers); the Kafka benches start their own broker.
bench: install kafka-jars
	@set -e; for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b; done

models: install
	@bash scripts/build-models.sh

# The generalisation reports: instability benchmark (both models), early detection, learning curve, summary.
generalisation: install
	.venv/bin/logad robustness --model artifacts/models/hdfs
	.venv/bin/logad robustness --model artifacts/models/openstack
	.venv/bin/logad early --model artifacts/models/hdfs
	.venv/bin/logad learning-curve
	.venv/bin/logad report
