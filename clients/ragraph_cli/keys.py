"""``ragraph keys create|list|revoke|hash``: the router's API key file.

The file (default ``$RAGRAPH_ROUTER_API_KEYS_FILE``, else ``.ragraph/keys.json``) holds only
``sha256:`` hashes; ``create`` prints the key itself once, and nothing can show it again.
A running router re-reads the file within about a second, so ``revoke`` needs no restart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _file(args: argparse.Namespace) -> Path:
    from ragraph_router.access.keys import default_keys_file

    return Path(args.file) if args.file else default_keys_file()


def create(args: argparse.Namespace) -> int:
    from ragraph_router.access.keys import create_key

    path = _file(args)
    try:
        key, record = create_key(path, args.name, rps=args.rps, burst=args.burst, tokens_per_min=args.tokens_per_min)
    except ValueError as exc:
        print(f"ragraph keys: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "key": key,
                    "id": record.id,
                    "name": record.name,
                    "hash": record.hash,
                    "limits": record.limits.to_json(),
                    "file": str(path),
                }
            )
        )
        return 0
    print(f"created API key {record.id} ({record.name}) in {path}")
    print(f"key:  {key}")
    print(f"hash: {record.hash}  (RAGRAPH_ROUTER_API_KEYS form, for routers without the file)")
    print("The key is shown only this once: store it now. Send it as 'authorization: Bearer <key>'.")
    return 0


def _limits_text(limits: dict[str, Any]) -> str:
    parts = []
    if "rps" in limits:
        parts.append(f"{limits['rps']:g} req/s")
    if "burst" in limits:
        parts.append(f"burst {limits['burst']}")
    if "tokens_per_min" in limits:
        parts.append(f"{limits['tokens_per_min']} tok/min")
    return ", ".join(parts) or "defaults"


def list_keys(args: argparse.Namespace) -> int:
    from ragraph_router.access.keys import read_keys

    path = _file(args)
    records = read_keys(path) if path.exists() else []
    if args.json:
        print(json.dumps({"file": str(path), "keys": [r.to_json() for r in records]}))
        return 0
    if not records:
        print(f"no API keys in {path}")
        return 0
    rows = [("ID", "NAME", "CREATED", "STATUS", "LIMITS", "HASH")]
    for r in records:
        status = f"revoked {r.revoked}" if r.revoked else "active"
        rows.append((r.id, r.name, r.created, status, _limits_text(r.limits.to_json()), r.hash[:19] + "..."))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def revoke(args: argparse.Namespace) -> int:
    from ragraph_router.access.keys import revoke_key

    record = revoke_key(_file(args), args.key_id)
    print(f"revoked API key {record.id} ({record.name}) at {record.revoked}")
    return 0


def hash_cmd(args: argparse.Namespace) -> int:
    from ragraph_router.access.keys import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        print('ragraph keys hash: no key on stdin (e.g. `printf %s "$KEY" | ragraph keys hash`)', file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def add_command(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage the router's API keys (hashed key file)")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    file_help = "key file (default $RAGRAPH_ROUTER_API_KEYS_FILE or .ragraph/keys.json)"

    p = sub.add_parser("create", help="create a key: prints it once, stores its hash")
    p.add_argument("--name", required=True, help="who or what the key is for")
    p.add_argument("--rps", type=float, help="requests/s for this key (default: the router's)")
    p.add_argument("--burst", type=int, help="request burst for this key (default: 2 x rps)")
    p.add_argument("--tokens-per-min", type=int, help="generated tokens/minute for this key (default: the router's)")
    p.add_argument("--file", help=file_help)
    p.add_argument("--json", action="store_true", help="one JSON object: key, id, name, hash, limits, file")
    p.set_defaults(func=create)

    p = sub.add_parser("list", help="list keys (ids, names, status, limits; never the keys)")
    p.add_argument("--file", help=file_help)
    p.add_argument("--json", action="store_true", help="the key file's entries as JSON")
    p.set_defaults(func=list_keys)

    p = sub.add_parser("revoke", help="revoke a key by id (a running router stops accepting it within ~1 s)")
    p.add_argument("key_id", help="the key's 8-hex-character id (see `ragraph keys list`)")
    p.add_argument("--file", help=file_help)
    p.set_defaults(func=revoke)

    p = sub.add_parser("hash", help="read a key on stdin, print its sha256:<hex> (for RAGRAPH_ROUTER_API_KEYS)")
    p.set_defaults(func=hash_cmd)
