"""`ragraph graph check` on a graph whose output guard is on a server no MODEL node uses: the
check asks that server too (one line per node down), and the listing names the MODEL nodes and
the stores the router opens."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from ragraph_cli import graph_cmd

GRAPH = """\
name: guarded
nodes:
  - {name: encode, type: MODEL, endpoint: {url: "127.0.0.1:1", model: encoder},
     inputs: {text: request.question}, children: [retrieve]}
  - {name: retrieve, type: RETRIEVER, endpoint: {store: "local://STORE"}, inputs: {vector: encode.embedding},
     children: [generate]}
  - name: generate
    type: MODEL
    endpoint: {url: "127.0.0.1:2", model: llm}
    inputs: {prompt: request.question}
    stream: true
    output_guard: {url: "127.0.0.1:3", model: classifier, labelset: answer_class, block_labels: [refused]}
"""


def test_the_output_guards_server_is_checked_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH.replace("STORE", str(tmp_path / "store")))
    args = argparse.Namespace(file=str(path), encoder_url=None, llm_url=None, timeout=0.5, json=True)
    assert graph_cmd.check(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert [p.split(" unreachable")[0] for p in out["problems"]] == [
        "node encode: encoder@127.0.0.1:1",
        "node generate: llm@127.0.0.1:2",
        "node generate output guard: classifier@127.0.0.1:3",
    ]
    assert out["models"] == [
        {"node": "encode", "model": "encoder", "url": "127.0.0.1:1"},
        {"node": "generate", "model": "llm", "url": "127.0.0.1:2"},
    ]
    assert out["stores"] == [f"local://{tmp_path / 'store'}"]
