"""Create the dense index the `pinecone` compose profile's router reads, on Pinecone Local.

Run by the one-shot `pinecone-init` service (router image, so the pinecone SDK is there):
waits for the emulator's control plane, creates the index when it is missing, exits 0. Pinecone
Local keeps everything in memory: each `docker compose up` of the profile starts empty.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


def ensure_index(pc: Any, name: str, dimension: int, metric: str) -> bool:
    """Create ``name`` unless it exists; True when it was created."""
    if pc.has_index(name):
        return False
    from pinecone import ServerlessSpec

    # Pinecone Local accepts any serverless spec; the cloud and region mean nothing to it
    pc.create_index(name=name, dimension=dimension, metric=metric, spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controller", required=True, help="control-plane URL, e.g. http://pinecone-local:5080")
    parser.add_argument("--index", default="ragraph")
    parser.add_argument("--dimension", type=int, default=384, help="the encoder's embedding size (MiniLM: 384)")
    parser.add_argument("--metric", default="cosine")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the control plane")
    args = parser.parse_args(argv)

    from pinecone import Pinecone

    # Pinecone Local ignores the key, but the SDK wants one
    pc = Pinecone(api_key=os.environ.get("PINECONE_API_KEY") or "pclocal", host=args.controller)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            created = ensure_index(pc, args.index, args.dimension, args.metric)
            break
        except Exception as exc:  # noqa: BLE001 - the emulator is still starting: any failure means retry
            if time.monotonic() > deadline:
                print(f"pinecone-init: {args.controller} not usable after {args.wait:.0f}s: {exc}", file=sys.stderr)
                return 1
            time.sleep(2)
    what = "created" if created else "already there"
    print(f"pinecone-init: index {args.index!r} ({args.dimension}-d, {args.metric}) {what} on {args.controller}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
