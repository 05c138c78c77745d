# Two commands a newcomer needs: `make up` (embedded stack) and `make test`.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install up test lint audit bench deploy-tools spark-jars
install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/k2 up

lint: $(STAMP)
	$(VENV)/bin/ruff check k2 feed_handlers offload flows tests bench docker/grafana
	$(VENV)/bin/mypy

# Known vulnerabilities in the installed dependencies (every one pinned, tests/security/test_dependencies.py).
# pip-audit asks pypi.org's per-release JSON API (or OSV): the offline build machines reach neither, so `test`
# does not run this; --strict makes an unreachable advisory source fail instead of passing with all skipped.
audit: $(STAMP)
	$(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off

# promtool, prometheus, alertmanager from Debian for tests/deploy (installs once, fails if it cannot)
deploy-tools:
	bash tests/deploy/ensure_tools.sh

# Spark + Iceberg jars for tests/offload/test_spark_engine.py, from PyPI + Debian (no Maven Central here);
# built once, the stamp keeps the tool's spark.jars= / java.library.path= lines, which the test reads
SPARK_JARS := $(HOME)/.cache/k2-spark-jars
# The shared tools sit beside the checkout (CI's layout); a clone made elsewhere from such a checkout
# (git clone . /tmp/x/k2) finds them beside the checkout it came from. SHARED=DIR overrides both.
ORIGIN := $(shell git config --get remote.origin.url 2>/dev/null)
SHARED ?= $(firstword $(realpath $(CURDIR)/../shared/tools $(ORIGIN)/../shared/tools))
$(SPARK_JARS)/.built: | $(STAMP)
	@test -n "$(SHARED)" || { echo "make: the shared tools (spark-offline/build-jars) are neither in ../shared/tools" \
		"nor beside $(ORIGIN); run with SHARED=/path/to/shared/tools" >&2; exit 2; }
	mkdir -p $(SPARK_JARS)
	$(SHARED)/spark-offline/build-jars $(SPARK_JARS) $(CURDIR)/$(VENV)/bin/python > $@.tmp
	mv $@.tmp $@
spark-jars: $(SPARK_JARS)/.built

test: $(STAMP) lint deploy-tools spark-jars
	$(VENV)/bin/pytest

bench: $(STAMP) spark-jars
	PYTHONPATH=. $(VENV)/bin/python bench/ingest.py --trades 1000000 --rate 5000 --seconds 30
	PYTHONPATH=. $(VENV)/bin/python bench/handlers.py --trades 100000 --rate 5000 --seconds 10
	PYTHONPATH=. $(VENV)/bin/python bench/handler_rss.py --seconds 15
	PYTHONPATH=. $(VENV)/bin/python bench/cold.py --rows 1000000 --maintenance-rows 10000000
	PYTHONPATH=. $(VENV)/bin/python bench/faults.py --broker-pause-s 30
	PYTHONPATH=. $(VENV)/bin/python bench/soak.py --minutes 30 --rate 5000 --offload-every-s 900
