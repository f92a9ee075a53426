"""Rate limits: the token-bucket behaviour table, run against MemoryBuckets and RedisBuckets (a real
redis-server, its clock driven through the script's time argument), then Redis-only behaviour
(Redis's own TIME, expiry, two Gates sharing one budget, Redis down) and the Gate's limit merging."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from ragraph_client.errors import ResourceExhausted, Unavailable
from ragraph_router.access.gate import ANONYMOUS_PRINCIPAL, Gate, Principal
from ragraph_router.access.keys import KeyStore, create_key, hash_key
from ragraph_router.access.limits import Buckets, Limits, MemoryBuckets, RateLimited, RedisBuckets

from tests.fixtures.redis_server import RedisServer, start_redis
from tests.fixtures.router_settings import access_settings
from tests.fixtures.servers import free_port


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for this module (skips when the binary is absent)."""
    server = start_redis(tmp_path_factory.mktemp("redis") / "redis.log")
    yield server
    server.stop()


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Buckets, FakeClock]]:
    clock = FakeClock()
    buckets: Buckets
    if request.param == "memory":
        buckets = MemoryBuckets(clock)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        buckets = RedisBuckets(server.url, clock=clock, prefix=f"test:{uuid.uuid4().hex}:")
    yield buckets, clock
    await buckets.close()


async def admitted(buckets: Buckets, key_id: str, limits: Limits, n: int) -> int:
    """How many of ``n`` back-to-back requests were admitted (no time passes)."""
    count = 0
    for _ in range(n):
        try:
            await buckets.admit(key_id, limits)
            count += 1
        except RateLimited:
            pass
    return count


async def refusal(call: Awaitable[None]) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await call
    return info.value


# --- the behaviour table, both backends ------------------------------------------------------------


async def test_burst_then_refill(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, clock = backend  # time steps are binary fractions, so the arithmetic is exact
    limits = Limits(rps=4)  # burst defaults to 2 x rps = 8
    assert await admitted(buckets, "k1", limits, 12) == 8
    err = await refusal(buckets.admit("k1", limits))
    assert err.limit == "requests"
    assert err.retry_after_s == pytest.approx(0.25, abs=1e-3)  # one request's worth of refill at 4/s
    clock.advance(0.125)
    err = await refusal(buckets.admit("k1", limits))
    assert err.retry_after_s == pytest.approx(0.125, abs=1e-3)
    clock.advance(0.125)
    await buckets.admit("k1", limits)
    await refusal(buckets.admit("k1", limits))
    clock.advance(1.0)
    assert await admitted(buckets, "k1", limits, 10) == 4
    clock.advance(3600)  # a long idle refills to the burst, never beyond it
    assert await admitted(buckets, "k1", limits, 30) == 8


async def test_explicit_burst_and_slow_rates(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, clock = backend
    assert await admitted(buckets, "b3", Limits(rps=1, burst=3), 5) == 3
    err = await refusal(buckets.admit("b3", Limits(rps=1, burst=3)))
    assert err.retry_after_s == pytest.approx(1.0, abs=1e-3)
    # 2 x 0.1 rps would be a capacity below one request: it is at least 1
    assert await admitted(buckets, "slow", Limits(rps=0.1), 3) == 1
    err = await refusal(buckets.admit("slow", Limits(rps=0.1)))
    assert err.retry_after_s == pytest.approx(10.0, abs=1e-3)
    clock.advance(9.9)
    await refusal(buckets.admit("slow", Limits(rps=0.1)))
    clock.advance(0.11)
    await buckets.admit("slow", Limits(rps=0.1))


async def test_keys_have_separate_buckets(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, _ = backend
    limits = Limits(rps=1, burst=2)
    assert await admitted(buckets, "aaaa0001", limits, 5) == 2
    assert await admitted(buckets, "aaaa0002", limits, 5) == 2


async def test_token_debt_blocks_until_refilled(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, clock = backend
    limits = Limits(tokens_per_min=600)  # 10 tokens/s
    await buckets.admit("t1", limits)
    level = await buckets.charge("t1", limits, 900)  # more than the whole bucket: 300 in debt
    assert level == pytest.approx(-300)
    err = await refusal(buckets.admit("t1", limits))
    assert err.limit == "tokens"
    assert err.retry_after_s == pytest.approx(30.1, abs=1e-3)  # debt + one token, at 10/s
    assert "600 generated tokens/min" in err.message
    clock.advance(30.0)  # debt paid, but not yet one token of budget
    await refusal(buckets.admit("t1", limits))
    clock.advance(0.2)
    await buckets.admit("t1", limits)
    # while not in debt, any number of requests pass (no rps limit here)
    assert await admitted(buckets, "t1", limits, 20) == 20


async def test_charge_within_budget_does_not_block(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, _ = backend
    limits = Limits(tokens_per_min=600)
    for _ in range(5):
        await buckets.admit("t2", limits)
        await buckets.charge("t2", limits, 100)
    await buckets.admit("t2", limits)  # 100 left
    await buckets.charge("t2", limits, 100)
    err = await refusal(buckets.admit("t2", limits))  # exactly 0 left: no budget
    assert err.retry_after_s == pytest.approx(0.1, abs=1e-3)


async def test_a_refused_request_takes_nothing(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, clock = backend
    limits = Limits(rps=1, burst=1, tokens_per_min=60)  # 1 token/s
    await buckets.admit("both", limits)  # the one request of the burst
    await buckets.charge("both", limits, 120)  # 60 tokens in debt
    clock.advance(1.0)  # the request bucket is full again; tokens still in debt
    for _ in range(5):
        err = await refusal(buckets.admit("both", limits))
        assert err.limit == "tokens"
    clock.advance(60.0)
    await buckets.admit("both", limits)  # the refusals did not drain the request bucket
    err = await refusal(buckets.admit("both", limits))
    assert err.limit == "requests"


async def test_both_over_reports_the_longer_wait(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, _ = backend
    limits = Limits(rps=10, burst=1, tokens_per_min=60)
    await buckets.admit("w", limits)
    await buckets.charge("w", limits, 61)
    err = await refusal(buckets.admit("w", limits))
    assert (err.limit, err.retry_after_s) == ("tokens", pytest.approx(2.0, abs=1e-3))


async def test_no_limits_admit_everything(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, _ = backend
    assert await admitted(buckets, "free", Limits(), 100) == 100
    await buckets.charge("free", Limits(), 10**9)
    assert await admitted(buckets, "free", Limits(), 10) == 10


async def test_rate_limited_error_shape(backend: tuple[Buckets, FakeClock]) -> None:
    buckets, _ = backend
    await buckets.admit("1a2b3c4d", Limits(rps=5, burst=1))
    err = await refusal(buckets.admit("1a2b3c4d", Limits(rps=5, burst=1)))
    assert isinstance(err, ResourceExhausted)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.message == "rate limit: key 1a2b3c4d is over 5 requests/s (burst 1); retry after 0.20 s"
    assert str(err) == err.message


# --- Redis only ------------------------------------------------------------------------------------


async def test_redis_uses_its_own_time_and_expires_full_buckets(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    buckets = RedisBuckets(redis_server.url)  # no clock: Redis TIME
    raw = aioredis.from_url(redis_server.url)
    key_id = uuid.uuid4().hex[:8]
    limits = Limits(rps=20, burst=2)
    try:
        assert await admitted(buckets, key_id, limits, 4) == 2
        err = await refusal(buckets.admit(key_id, limits))
        assert 0 < err.retry_after_s <= 0.05 + 1e-6
        seconds, micros = await raw.time()
        stored = float(await raw.hget(f"ragraph:rl:{key_id}:req", "ts") or "nan")
        assert abs(stored - (seconds + micros / 1e6)) < 1.0  # the bucket's time is Redis's clock
        ttl_ms = await raw.pttl(f"ragraph:rl:{key_id}:req")
        assert 0 < ttl_ms <= 100 + 1000  # expires once refilled (2 requests at 20/s) plus a margin
        await asyncio.sleep(err.retry_after_s + 0.03)
        await buckets.admit(key_id, limits)
        await buckets.charge(key_id, Limits(tokens_per_min=60), 5)
        assert await raw.pttl(f"ragraph:rl:{key_id}:tok") > 4000  # 5 tokens at 1/s to refill
    finally:
        await raw.aclose()
        await buckets.close()


async def test_two_gates_on_one_redis_share_one_budget(redis_server: RedisServer) -> None:
    key = "rgk_0badcafe_" + "s" * 43
    settings = access_settings(
        api_keys=hash_key(key),
        redis_url=redis_server.url,
        rate_limit_rps=0.01,
        rate_limit_burst=3,
        rate_limit_tokens_per_min=600,
    )
    one, two = Gate.from_settings(settings), Gate.from_settings(settings)
    try:
        headers = {"authorization": f"Bearer {key}"}
        p1, p2 = one.authenticate(headers), two.authenticate(headers)
        assert p1 == p2 == Principal("0badcafe", "env")
        await one.admit(p1)
        await two.admit(p2)
        await one.admit(p1)
        err = await refusal(two.admit(p2))  # the burst of 3 is spent across both
        assert err.limit == "requests"
        await refusal(one.admit(p1))
    finally:
        await one.close()
        await two.close()
    # tokens: one charges, the other is blocked
    other = "rgk_0badf00d_" + "t" * 43
    settings = access_settings(api_keys=hash_key(other), redis_url=redis_server.url, rate_limit_tokens_per_min=60)
    one, two = Gate.from_settings(settings), Gate.from_settings(settings)
    try:
        principal = one.authenticate({"x-api-key": other})
        await two.admit(principal)
        await one.charge(principal, 1000)
        err = await refusal(two.admit(principal))
        assert err.limit == "tokens" and err.retry_after_s > 900
    finally:
        await one.close()
        await two.close()


async def test_redis_down_is_unavailable_naming_the_url_not_a_silent_fallback() -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    buckets = RedisBuckets(url, timeout_s=0.5)
    try:
        with pytest.raises(Unavailable) as info:
            await buckets.admit("k", Limits(rps=1))
        assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in info.value.message
        assert "hunter2secret" not in info.value.message
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(Unavailable):
            await buckets.charge("k", Limits(tokens_per_min=10), 5)
    finally:
        await buckets.close()
    # with no limits configured the gate never calls Redis at all
    gate = Gate.from_settings(access_settings(redis_url=url))
    await gate.admit(ANONYMOUS_PRINCIPAL)
    await gate.charge(ANONYMOUS_PRINCIPAL, 100)
    await gate.close()


# --- the Gate's limits -----------------------------------------------------------------------------


def _gate(tmp_path: Path, clock: FakeClock, **defaults: object) -> tuple[Gate, Callable[..., tuple[str, str]]]:
    path = tmp_path / "keys.json"

    def new_key(name: str, **limits: object) -> tuple[str, str]:
        key, record = create_key(path, name, **limits)  # type: ignore[arg-type]
        return key, record.id

    new_key("seed")
    gate = Gate(KeyStore.load(path, clock=clock, reload_interval_s=0), Limits(**defaults), MemoryBuckets(clock))  # type: ignore[arg-type]
    return gate, new_key


async def test_gate_defaults_apply_to_anonymous_when_auth_is_off() -> None:
    clock = FakeClock()
    gate = Gate(None, Limits(rps=1, burst=2), MemoryBuckets(clock))
    assert not gate.enabled
    principal = gate.authenticate({})
    assert principal == ANONYMOUS_PRINCIPAL
    await gate.admit(principal)
    await gate.admit(gate.authenticate({"x-api-key": "ignored when auth is off"}))
    err = await refusal(gate.admit(principal))  # one budget for every anonymous caller
    assert err.message.startswith("rate limit: anonymous callers are over 1 requests/s")
    assert Gate.from_settings(access_settings(rate_limit_rps=3)).limits_for(principal) == Limits(rps=3)


async def test_gate_per_key_limits_win_over_defaults(tmp_path: Path) -> None:
    clock = FakeClock()
    gate, new_key = _gate(tmp_path, clock, rps=1, burst=1, tokens_per_min=6000)
    _, plain = new_key("plain")
    _, fast = new_key("fast", rps=50)
    _, tight = new_key("tight", tokens_per_min=60, burst=4)
    assert gate.limits_for(Principal(plain, "plain")) == Limits(1, 1, 6000)
    assert gate.limits_for(Principal(fast, "fast")) == Limits(50, None, 6000)  # burst: 2 x its own rps
    assert gate.limits_for(Principal(tight, "tight")) == Limits(1, 4, 60)
    assert await admitted(gate.buckets, fast, gate.limits_for(Principal(fast, "fast")), 200) == 100
    for _ in range(4):
        await gate.admit(Principal(tight, "tight"))
    err = await refusal(gate.admit(Principal(tight, "tight")))
    assert f"key {tight} is over 1 requests/s (burst 4)" in err.message
    await gate.charge(Principal(plain, "plain"), 0)  # nothing to charge
    await gate.admit(Principal(plain, "plain"))
    await gate.charge(Principal(plain, "plain"), 7000)
    clock.advance(5)
    assert (await refusal(gate.admit(Principal(plain, "plain")))).limit == "tokens"


async def test_gate_without_any_limits_is_a_no_op(tmp_path: Path) -> None:
    clock = FakeClock()
    gate, _ = _gate(tmp_path, clock)
    principal = Principal("0000aaaa", "x")
    for _ in range(1000):
        await gate.admit(principal)
    await gate.charge(principal, 10**9)
    await gate.admit(principal)
    assert gate.buckets._state == {}  # type: ignore[attr-defined]
