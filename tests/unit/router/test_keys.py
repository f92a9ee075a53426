"""API keys: the ``ragraph keys`` CLI and its file, hashing, constant-time verification, reload
on change (revocation without a restart), the Gate's auth table, and keys never showing up in the
file, in CLI output, in messages or in logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import stat
import time
from pathlib import Path

import grpc
import pytest
from ragraph_cli.main import main
from ragraph_client.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from ragraph_router.access.gate import ANONYMOUS_PRINCIPAL, Gate, Principal
from ragraph_router.access.keys import KeyStore, create_key, hash_key, key_id_of, read_keys, revoke_key
from ragraph_router.access.limits import Limits

from tests.fixtures.router_settings import access_settings

KEY_RE = re.compile(r"rgk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def create(capsys: pytest.CaptureFixture[str], path: Path, name: str, *extra: str) -> dict:
    code, out = cli(capsys, "keys", "create", "--name", name, "--file", str(path), "--json", *extra)
    assert code == 0, out
    return json.loads(out)


def test_create_list_revoke_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sub" / "keys.json"
    alice = create(capsys, path, "alice", "--rps", "5", "--burst", "20", "--tokens-per-min", "9000")
    bob = create(capsys, path, "bob")
    for made in (alice, bob):
        match = KEY_RE.fullmatch(made["key"])
        assert match is not None, "key format rgk_<8 hex>_<token_urlsafe(32)>"
        assert match.group(1) == made["id"]
        assert HASH_RE.fullmatch(made["hash"])
        assert made["hash"] == "sha256:" + hashlib.sha256(made["key"].encode()).hexdigest()
    assert alice["id"] != bob["id"]
    assert alice["limits"] == {"rps": 5.0, "burst": 20, "tokens_per_min": 9000}

    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = json.loads(text)["keys"]
    assert [(e["id"], e["name"], e["hash"], e["revoked"]) for e in entries] == [
        (alice["id"], "alice", alice["hash"], None),
        (bob["id"], "bob", bob["hash"], None),
    ]
    assert entries[0]["limits"] == {"rps": 5.0, "burst": 20, "tokens_per_min": 9000}
    assert entries[1]["limits"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entries[0]["created"])

    code, listing = cli(capsys, "keys", "list", "--file", str(path))
    assert code == 0
    assert alice["id"] in listing and "alice" in listing and "5 req/s" in listing and "active" in listing
    code, listing_json = cli(capsys, "keys", "list", "--file", str(path), "--json")
    assert [k["id"] for k in json.loads(listing_json)["keys"]] == [alice["id"], bob["id"]]

    code, out = cli(capsys, "keys", "revoke", alice["id"], "--file", str(path))
    assert code == 0 and f"revoked API key {alice['id']}" in out
    entries = json.loads(path.read_text())["keys"]
    assert entries[0]["revoked"] is not None and entries[1]["revoked"] is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # rewritten, still private
    code, listing = cli(capsys, "keys", "list", "--file", str(path))
    assert f"revoked {entries[0]['revoked']}" in listing

    code, out = cli(capsys, "keys", "revoke", "0123abcd", "--file", str(path))
    assert code == 1 and "NOT_FOUND" in out and "0123abcd" in out

    # the keys themselves (and their secrets) are nowhere but in create's one-time output
    for made in (alice, bob):
        secret = made["key"].split("_", 2)[2]
        for where in (path.read_text(), listing, listing_json, out):
            assert made["key"] not in where and secret not in where
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_create_plain_output_and_default_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAGRAPH_ROUTER_API_KEYS_FILE", raising=False)
    code, out = cli(capsys, "keys", "create", "--name", "ci")
    assert code == 0
    key = re.search(r"key:\s+(rgk_\S+)", out)
    assert key is not None and out.count(key.group(1)) == 1  # printed once
    assert "shown only this once" in out
    assert [r.name for r in read_keys(tmp_path / ".ragraph" / "keys.json")] == ["ci"]
    monkeypatch.setenv("RAGRAPH_ROUTER_API_KEYS_FILE", str(tmp_path / "env.json"))
    assert cli(capsys, "keys", "create", "--name", "from-env")[0] == 0
    assert [r.name for r in read_keys(tmp_path / "env.json")] == ["from-env"]


def test_hash_command_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("rgk_00112233_abc\n"))
    code, out = cli(capsys, "keys", "hash")
    assert code == 0
    assert out.strip() == "sha256:" + hashlib.sha256(b"rgk_00112233_abc").hexdigest() == hash_key("rgk_00112233_abc")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli(capsys, "keys", "hash")[0] == 2


def test_bad_limits_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "keys", "create", "--name", "x", "--rps", "0", "--file", str(tmp_path / "k.json"))
    assert code == 2 and "rps must be > 0" in out
    assert not (tmp_path / "k.json").exists()


def test_verification_uses_compare_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    key, record = create_key(path, "svc")
    env_key = "rgk_feedf00d_" + "e" * 43
    store = KeyStore.load(path, [hash_key(env_key)])
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert store.verify(key).id == record.id
    assert (hash_key(key).encode(), record.hash.encode()) in calls
    calls.clear()
    assert store.verify(env_key).id == "feedf00d"
    assert (hash_key(env_key).encode(), hash_key(env_key).encode()) in calls
    calls.clear()
    with pytest.raises(Unauthenticated):
        store.verify(key[:-1] + ("A" if key[-1] != "A" else "B"))  # right id, wrong secret
    assert calls, "a wrong secret is rejected by the constant-time comparison"


def test_reload_after_revoke_and_create(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, record = create_key(path, "svc")
    clock = FakeClock()
    store = KeyStore.load(path, clock=clock)
    assert store.verify(key).name == "svc"
    revoke_key(path, record.id)
    later, later_record = create_key(path, "later")
    clock.now += 0.2  # within the check interval: the file is not looked at yet
    assert store.verify(key).id == record.id
    with pytest.raises(Unauthenticated):
        store.verify(later)
    clock.now += 0.4
    with pytest.raises(Unauthenticated) as info:
        store.verify(key)
    assert info.value.message == f"API key {record.id} was revoked"
    assert store.verify(later).id == later_record.id


def test_a_broken_file_keeps_the_last_good_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    key, _ = create_key(path, "svc")
    clock = FakeClock()
    store = KeyStore.load(path, clock=clock)
    path.write_text("{not json")
    clock.now += 1
    with caplog.at_level(logging.ERROR, logger="ragraph.router.access"):
        assert store.verify(key).name == "svc"
    assert "keeping the previous API keys" in caplog.text
    with pytest.raises(FailedPrecondition, match="unreadable"):
        KeyStore.load(path)
    with pytest.raises(FailedPrecondition, match="not found"):
        KeyStore.load(tmp_path / "missing.json")


def test_gate_auth_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    good, good_rec = create_key(path, "good")
    revoked, revoked_rec = create_key(path, "gone")
    revoke_key(path, revoked_rec.id)
    env_key = "a-long-random-operator-chosen-secret-0123456789"  # env-var keys need not be rgk_ form
    gate = Gate.from_settings(access_settings(api_keys_file=str(path), api_keys=f" {hash_key(env_key)} ,"))
    assert gate.enabled
    wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    unknown = "rgk_00000000_" + "x" * 43

    ok = {
        "bearer": ({"authorization": f"Bearer {good}"}, Principal(good_rec.id, "good")),
        "bearer lower-case scheme": ({"authorization": f"bearer  {good} "}, Principal(good_rec.id, "good")),
        "x-api-key": ({"x-api-key": good}, Principal(good_rec.id, "good")),
        "env key": ({"x-api-key": env_key}, Principal(hash_key(env_key)[7:15], "env")),
    }
    bad = {
        "no key": ({}, "missing API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'"),
        "empty": ({"x-api-key": "  "}, "missing API key"),
        "not bearer": ({"authorization": f"Basic {good}"}, "malformed authorization header"),
        "wrong secret": ({"authorization": f"Bearer {wrong}"}, "invalid API key"),
        "unknown id": ({"x-api-key": unknown}, "invalid API key"),
        "not a key": ({"x-api-key": "hello"}, "invalid API key"),
        "revoked": ({"x-api-key": revoked}, f"API key {revoked_rec.id} was revoked"),
        "too long": ({"x-api-key": "k" * 5000}, "malformed API key"),
    }
    with caplog.at_level(logging.DEBUG):
        for case, (headers, principal) in ok.items():
            assert gate.authenticate(headers) == principal, case
        messages = []
        for case, (headers, expected) in bad.items():
            with pytest.raises(Unauthenticated) as info:
                gate.authenticate(headers)
            assert info.value.message.startswith(expected), case
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            messages.append(info.value.message + repr(info.value))
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (good, revoked, env_key, wrong, unknown):
        for where in (logged, *messages):
            assert secret not in where
            assert secret[13:] not in where  # nor the secret part
    assert revoked_rec.id in logged  # the id is what gets logged


def test_only_the_file_configured_rejects_non_key_strings_as_malformed(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key(path, "svc")
    gate = Gate.from_settings(access_settings(api_keys_file=str(path)))
    with pytest.raises(Unauthenticated, match="malformed API key: expected 'rgk_<id>_<secret>'"):
        gate.authenticate({"x-api-key": "hello"})


def test_auth_off_and_env_validation() -> None:
    gate = Gate.from_settings(access_settings(api_keys="  "))
    assert not gate.enabled
    assert gate.authenticate({}) == ANONYMOUS_PRINCIPAL == Principal("anonymous", "anonymous")
    assert gate.limits_for(ANONYMOUS_PRINCIPAL) == Limits()
    pasted = "rgk_12345678_" + "p" * 43  # a key pasted where its hash belongs
    with pytest.raises(InvalidArgument) as info:
        Gate.from_settings(access_settings(api_keys=f"{hash_key('x')},{pasted}"))
    assert "entry 2" in info.value.message and pasted not in info.value.message


def test_key_helpers() -> None:
    assert key_id_of("rgk_0a1b2c3d_" + "z" * 43) == "0a1b2c3d"
    assert key_id_of("rgk_0A1B2C3D_" + "z" * 43) is None
    assert key_id_of("rgk_0a1b2c3d") is None
    assert key_id_of("rgk_0a1b2c3d_short") is None


def test_revoking_an_unknown_id_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key(path, "svc")
    before = path.read_text()
    with pytest.raises(NotFound, match="no key with id '00000000'"):
        revoke_key(path, "00000000")
    assert path.read_text() == before


def test_revocation_reaches_a_live_gate_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, record = create_key(path, "svc")
    gate = Gate.from_settings(access_settings(api_keys_file=str(path)))
    assert gate.authenticate({"x-api-key": key}).key_id == record.id
    revoke_key(path, record.id)
    deadline = time.monotonic() + 2.0
    while True:
        try:
            gate.authenticate({"x-api-key": key})
        except Unauthenticated as exc:
            assert exc.message == f"API key {record.id} was revoked"
            break
        assert time.monotonic() < deadline, "revocation not picked up"
        time.sleep(0.05)
