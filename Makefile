# Two commands a newcomer needs: `make up` (embedded stack) and `make test`.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install up test lint bench
install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/k2 up

lint: $(STAMP)
	$(VENV)/bin/ruff check k2 feed_handlers tests bench
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(VENV)/bin/pytest

bench: $(STAMP)
	PYTHONPATH=. $(VENV)/bin/python bench/ingest.py --trades 1000000 --rate 5000 --seconds 30
	PYTHONPATH=. $(VENV)/bin/python bench/handlers.py --trades 100000 --rate 5000 --seconds 10
	PYTHONPATH=. $(VENV)/bin/python bench/handler_rss.py --seconds 15
