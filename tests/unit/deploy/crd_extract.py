"""How tests/unit/deploy/data/crds/ was made: the openAPIV3Schema of one version of a published
CustomResourceDefinition, descriptions dropped, stored as gzipped JSON with where it came from.

    python tests/unit/deploy/crd_extract.py CRD.yaml KIND VERSION SOURCE OUT.json.gz

SOURCE is recorded as is (repository, path and commit of the CRD file)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def extract(crd_text: str, kind: str, version: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(crd_text):
        if not doc or doc.get("kind") != "CustomResourceDefinition" or doc["spec"]["names"]["kind"] != kind:
            continue
        for served in doc["spec"]["versions"]:
            if served["name"] == version:
                schema = _strip(served["schema"]["openAPIV3Schema"])
                return {"apiVersion": f"{doc['spec']['group']}/{version}", "kind": kind, "schema": schema}
    raise SystemExit(f"no CRD for {kind} {version}")


def main(argv: list[str]) -> None:
    crd, kind, version, source, out = argv
    data = {"source": source, **extract(Path(crd).read_text(), kind, version)}
    Path(out).write_bytes(gzip.compress(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), mtime=0))


if __name__ == "__main__":
    main(sys.argv[1:])
