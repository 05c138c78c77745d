# Two commands a newcomer needs: `make up` (embedded stack) and `make test`.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install up test lint bench deploy-tools spark-jars
install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/k2 up

lint: $(STAMP)
	$(VENV)/bin/ruff check k2 feed_handlers offload flows tests bench docker/grafana
	$(VENV)/bin/mypy

# promtool, prometheus, alertmanager from Debian for tests/deploy (installs once, fails if it cannot)
deploy-tools:
	bash tests/deploy/ensure_tools.sh

# Spark + Iceberg jars for tests/offload/test_spark_engine.py, from PyPI + Debian (no Maven Central here);
# built once, the stamp keeps the tool's spark.jars= / java.library.path= lines, which the test reads
SPARK_JARS := $(HOME)/.cache/k2-spark-jars
$(SPARK_JARS)/.built: | $(STAMP)
	mkdir -p $(SPARK_JARS)
	../shared/tools/spark-offline/build-jars $(SPARK_JARS) $(CURDIR)/$(VENV)/bin/python > $@.tmp
	mv $@.tmp $@
spark-jars: $(SPARK_JARS)/.built

test: $(STAMP) lint deploy-tools spark-jars
	$(VENV)/bin/pytest

bench: $(STAMP)
	PYTHONPATH=. $(VENV)/bin/python bench/ingest.py --trades 1000000 --rate 5000 --seconds 30
	PYTHONPATH=. $(VENV)/bin/python bench/handlers.py --trades 100000 --rate 5000 --seconds 10
	PYTHONPATH=. $(VENV)/bin/python bench/handler_rss.py --seconds 15
