# facerec: the two commands a newcomer needs are `make serve` and `make test`.
# The dev venv has the `convert` extra (TensorFlow: weights conversion, training, the reference detector); the
# server itself never imports it (the runtime image installs the base package only, see the Dockerfile).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
PGDIR  ?= data/postgres
REPLICA_PORTS ?= 8001 8002
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: serve serve-replicas test test-fast lint bench weights install clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,convert,offline-docs]'
	@touch $(STAMP)

install: $(STAMP)

weights: $(STAMP)
	@$(BIN)/facerec weights fetch --quiet

serve: weights
	$(BIN)/facerec serve --host $(HOST) --port $(PORT)

# A local PostgreSQL 18 + pgvector (in $(PGDIR), kept between runs) and one replica per port of REPLICA_PORTS on
# it; Ctrl-C stops the replicas, `$(BIN)/facerec db stop --dir $(PGDIR)` the database (docs/POSTGRES.md).
serve-replicas: weights
	@$(BIN)/facerec db start --dir $(PGDIR) >/dev/null
	@url="$$($(BIN)/facerec db url --dir $(PGDIR))"; pids=""; \
	trap 'kill $$pids 2>/dev/null; wait' INT TERM EXIT; \
	for port in $(REPLICA_PORTS); do \
	    FACEREC_DATABASE_URL="$$url" $(BIN)/facerec serve --host $(HOST) --port $$port & pids="$$pids $$!"; \
	done; \
	echo "replicas on $(HOST) ports $(REPLICA_PORTS), sharing PostgreSQL in $(PGDIR); Ctrl-C stops them"; \
	wait

test: weights
	@$(BIN)/python -m pytest -q

# the tests not marked slow (no real-weights pipeline runs): well under a minute on a 2-core VM
test-fast: weights
	@$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy embeddings service bench tests

bench: weights
	$(BIN)/python bench/embed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
