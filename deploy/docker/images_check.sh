#!/bin/sh
# `make images-check`: what each image's build stage does, without a Docker engine.
# For every service: stage the build context the Dockerfiles copy, run deploy/docker/install.sh
# (the script the Dockerfiles run) into a fresh venv under a temp dir, import the service's entry
# point there, and for the encoder also start `ragraph serve encoder` from that venv and wait for
# `ragraph health` to say SERVING (its default model must load offline from the installed wheels).
#
# TORCH_INDEX_URL defaults to empty here: torch==2.13.0 then comes from pip's own configuration
# (on the project's machines, a local CPU wheel); the Dockerfiles default to the CPU wheel index.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SERVICES=${SERVICES:-encoder llm router}
export TORCH_INDEX_URL=${TORCH_INDEX_URL-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ragraph-images-check.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# the build context (see .dockerignore): pyproject.toml, README.md, clients/, services/
mkdir -p "$WORK/src"
cp -R "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/clients" "$ROOT/services" "$WORK/src/"
find "$WORK/src" \( -name '__pycache__' -o -name '*.egg-info' -o -name '.pytest_cache' \) -prune -exec rm -rf {} +
rm -f "$WORK"/src/services/*/Dockerfile

free_port() { "$1" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

for service in $SERVICES; do
    dockerfile="$ROOT/services/$service/Dockerfile"
    grep -q 'ragraph-install /opt/ragraph /src' "$dockerfile" || { echo "$dockerfile does not run install.sh" >&2; exit 1; }
    venv="$WORK/$service-venv"
    echo "==> $service: install.sh into a fresh venv ($venv)"
    start=$(date +%s)
    # what the Dockerfile's RUN passes: EXTRAS (its ARG EXTRAS) and NO_DEPS_PACKAGES (its ARG
    # BUNDLED_LLM or BUNDLED_TOKENIZER default)
    extras=$(sed -n 's/^ARG EXTRAS=//p' "$dockerfile")
    no_deps=$(sed -n 's/^ARG BUNDLED_\(LLM\|TOKENIZER\)=//p' "$dockerfile")
    EXTRAS="$extras" NO_DEPS_PACKAGES="$no_deps" sh "$ROOT/deploy/docker/install.sh" "$venv" "$WORK/src"
    echo "    installed in $(( $(date +%s) - start ))s; $(du -sh "$venv" | cut -f1) on disk; extras '$extras';" \
        "torch $("$venv/bin/python" -c 'import importlib.util as u; print(u.find_spec("torch") and __import__("torch").__version__ or "none")')"
    case $service in
        encoder) entry=ragraph_encoder.server ;;
        llm) entry=ragraph_llm.server ;;
        router) entry=ragraph_router.server ;;
        *) echo "unknown service $service" >&2; exit 1 ;;
    esac
    # the image's CMD and HEALTHCHECK: `ragraph serve <service>` and `ragraph health`
    (cd "$WORK" && "$venv/bin/python" -c "import $entry, ragraph_cli.main; ragraph_cli.main.build_parser()")
    (cd "$WORK" && "$venv/bin/ragraph" serve "$service" --help >/dev/null)
    (cd "$WORK" && "$venv/bin/ragraph" health --help >/dev/null)
    echo "    $entry imports; 'ragraph serve $service' and 'ragraph health' parse"
    if [ "$service" = router ]; then
        # the router's own work without torch: the encoder's tokenizer from the bundled package, offline
        (cd "$WORK" && HF_HUB_OFFLINE=1 "$venv/bin/python" -c \
            "import sys, ragraph_router.server; from ragraph_retrieval.tokens import encoder_counter; c, n = encoder_counter(); assert 'torch' not in sys.modules; print('    encoder tokenizer without torch:', c.count('hello world'), 'tokens, limit', n)")
    fi
    if [ "$service" = llm ] && [ -n "$no_deps" ]; then
        (cd "$WORK" && HF_HUB_OFFLINE=1 HF_HOME="$WORK/hf-home" "$venv/bin/python" -c \
            "from ragraph_llm.sources import bundled_gguf, resolve_auto; assert bundled_gguf(); print('    model auto:', resolve_auto().name)")
    fi
    if [ "$service" = encoder ]; then
        grpc=$(free_port "$venv/bin/python"); http=$(free_port "$venv/bin/python"); metrics=$(free_port "$venv/bin/python")
        (cd "$WORK" && HF_HUB_OFFLINE=1 HF_HOME="$WORK/hf-home" exec "$venv/bin/ragraph" serve encoder \
            --grpc-port "$grpc" --http-port "$http" --metrics-port "$metrics" >"$WORK/encoder.log" 2>&1) &
        SERVER_PID=$!
        waited=0
        until "$venv/bin/ragraph" health "127.0.0.1:$grpc" --timeout 2 >/dev/null 2>&1; do
            waited=$((waited + 1))
            if [ "$waited" -gt 180 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
                echo "encoder from the fresh venv did not become SERVING; its log:" >&2; cat "$WORK/encoder.log" >&2; exit 1
            fi
            sleep 1
        done
        echo "    $("$venv/bin/ragraph" health "127.0.0.1:$grpc") after ~${waited}s (offline, default model from the wheel)"
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
    fi
    rm -rf "$venv"
done
echo "images-check: OK ($SERVICES)"
