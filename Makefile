PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run run-scaled run-scaled-partitioned test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/nextbest serve --catalog examples/bank --data .nextbest/embedded.sqlite

# two stateless API workers (:8001, :8002) and one fold worker (:8003) on the local PostgreSQL
# (database test, schema nextbest_scaled), Redis (db 1) and NATS JetStream (stream NEXTBEST);
# docs/scale-out.md. Ctrl-C stops all three.
SCALED_DATA ?= postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dnextbest_scaled
SCALED_PROFILES ?= redis://127.0.0.1:6379/1
SCALED_BUS ?= nats://127.0.0.1:4222/NEXTBEST
run-scaled: $(STAMP)
	psql "postgresql://postgres@127.0.0.1:5432/test" -qc "CREATE SCHEMA IF NOT EXISTS nextbest_scaled"
	export NEXTBEST_CATALOG=examples/bank NEXTBEST_DATA='$(SCALED_DATA)' \
	  NEXTBEST_PROFILES='$(SCALED_PROFILES)' NEXTBEST_BUS='$(SCALED_BUS)'; \
	trap 'kill 0' INT TERM EXIT; \
	$(BIN)/nextbest serve --role fold --port 8003 & sleep 3; \
	$(BIN)/nextbest serve --role api --port 8001 & \
	$(BIN)/nextbest serve --role api --port 8002 & \
	wait

# the same with two fold workers, each owning half of the 16 partitions (the first also the
# model writer); a deployment of its own (schema nextbest_scaled2, Redis db 2, stream
# NEXTBEST2): one fold worker's state and several workers' are not mixed
run-scaled-partitioned: $(STAMP)
	psql "postgresql://postgres@127.0.0.1:5432/test" -qc "CREATE SCHEMA IF NOT EXISTS nextbest_scaled2"
	export NEXTBEST_CATALOG=examples/bank \
	  NEXTBEST_DATA='postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dnextbest_scaled2' \
	  NEXTBEST_PROFILES='redis://127.0.0.1:6379/2' NEXTBEST_BUS='nats://127.0.0.1:4222/NEXTBEST2'; \
	trap 'kill 0' INT TERM EXIT; \
	$(BIN)/nextbest serve --role fold --partitions 0-7 --port 8003 & \
	$(BIN)/nextbest serve --role fold --partitions 8-15 --port 8004 & sleep 3; \
	$(BIN)/nextbest serve --role api --port 8001 & \
	$(BIN)/nextbest serve --role api --port 8002 & \
	wait

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
