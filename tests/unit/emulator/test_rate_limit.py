"""The emulator's rate limiter is Stripe's token bucket (capacity = the per-second limit,
refilled continuously), driven here by a fake monotonic clock through the request pipeline
and the operator API: no sleeping, the same answer on a loaded machine."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from stripe_emulator.app import EmulatorApp
from stripe_emulator.core import Emulator
from stripe_emulator.operations import RateLimiter
from stripe_emulator.pipeline import ApiRequest, ApiResponse

KEY = "sk_test_rate_limit"


class FakeClock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _never() -> None:
    await asyncio.Event().wait()


def _request(method: str, path: str, body: dict[str, object] | None = None) -> ApiRequest:
    return ApiRequest(
        method=method,
        path=path,
        query="",
        headers={"authorization": f"Bearer {KEY}"},
        body=json.dumps(body).encode() if body is not None else b"",
        wait_disconnect=_never,
    )


class Api:
    """An in-process emulator whose limiter reads `clock`."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.emulator = Emulator()
        self.emulator.rate_limiter = RateLimiter(clock=clock)
        self.app = EmulatorApp(self.emulator)

    def limit(self, per_second: int | None, burst: int | None = None) -> ApiResponse:
        body: dict[str, object] = {"per_second": per_second}
        if burst is not None:
            body["burst"] = burst
        return self.app.operator.handle(_request("POST", "/_emulator/rate_limit", body))

    def get(self, at: float) -> ApiResponse:
        self.clock.now = at
        return asyncio.run(self.app.pipeline.handle(_request("GET", "/v1/products")))


def test_n_per_second_evenly_with_50ms_jitter_is_never_refused() -> None:
    # What the fixed window got wrong: a client pacing N a second on its side, with its
    # requests arriving up to 50 ms early or late, crosses the emulator's second boundaries
    # with N+1 or N+2 requests in one second now and then.
    clock = FakeClock()
    api = Api(clock)
    n = 25
    api.limit(n)
    rng = random.Random(7)
    start = clock.now + 0.3  # not aligned with any whole second
    # 20 seconds of it.
    arrivals = sorted(start + i / n + rng.uniform(-0.05, 0.05) for i in range(n * 20))
    statuses = [api.get(at).status for at in arrivals]
    assert statuses.count(200) == len(arrivals)
    # The same arrivals seen by a fixed one-second window would have been refused.
    per_window: dict[int, int] = {}
    for at in arrivals:
        per_window[int(at)] = per_window.get(int(at), 0) + 1
    assert max(per_window.values()) > n


def test_a_burst_of_2n_at_once_is_refused_past_n_then_refills() -> None:
    clock = FakeClock()
    api = Api(clock)
    n = 25
    api.limit(n)
    t0 = clock.now
    burst = [api.get(t0 + i * 0.0001) for i in range(2 * n)]  # 5 ms in all
    statuses = [r.status for r in burst]
    assert statuses[:n] == [200] * n
    assert statuses.count(429) == n  # 0.125 of a token refilled meanwhile: not one more
    # Refilled at N a second: 200 ms later, 5 more; a second later, the full bucket of N.
    later = clock.now + 0.2
    assert [api.get(later).status for _ in range(6)] == [200] * 5 + [429]
    full = later + 5.0
    assert [api.get(full).status for _ in range(n + 1)] == [200] * n + [429]


def test_the_429_is_stripes() -> None:
    clock = FakeClock()
    api = Api(clock)
    api.limit(1)
    assert api.get(clock.now).status == 200
    refused = api.get(clock.now)
    assert refused.status == 429
    assert refused.headers["Stripe-Should-Retry"] == "true"
    assert refused.headers["Request-Id"].startswith("req_")
    error = json.loads(refused.body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "rate_limit")
    assert error["doc_url"] == "https://stripe.com/docs/error-codes/rate-limit"
    assert "rate limit" in error["message"]
    # Counted as it arrived, refused or not: the request log holds both.
    logged = api.emulator.request_log.entries(method=None, path_prefix=None)
    assert [e.status for e in logged] == [200, 429]


def test_an_optional_burst_sets_the_bucket_size() -> None:
    clock = FakeClock()
    api = Api(clock)
    answer = api.limit(10, burst=30)
    assert json.loads(answer.body) == {"per_second": 10, "burst": 30}
    statuses = [api.get(clock.now).status for _ in range(31)]
    assert statuses == [200] * 30 + [429]
    # ...refilled at 10 a second, not 30.
    second = clock.now + 1.0
    assert [api.get(second).status for _ in range(11)] == [200] * 10 + [429]


def test_the_default_burst_is_the_limit_and_none_turns_it_off() -> None:
    clock = FakeClock()
    api = Api(clock)
    assert json.loads(api.limit(3).body) == {"per_second": 3, "burst": 3}
    assert [api.get(clock.now).status for _ in range(4)] == [200, 200, 200, 429]
    assert json.loads(api.limit(None).body) == {"per_second": None, "burst": None}
    assert {api.get(clock.now).status for _ in range(50)} == {200}
    # A new limit starts with a full bucket; reset turns the limit off.
    api.limit(2)
    assert [api.get(clock.now).status for _ in range(3)] == [200, 200, 429]
    api.emulator.reset()
    assert {api.get(clock.now).status for _ in range(10)} == {200}


@pytest.mark.parametrize(
    "body",
    [
        {"per_second": 0},
        {"per_second": "5"},
        {"per_second": True},
        {"per_second": 5, "burst": 0},
        {"per_second": 5, "burst": 2.5},
        {"per_second": None, "burst": 5},
    ],
)
def test_bad_limits_are_refused(body: dict[str, object]) -> None:
    api = Api(FakeClock())
    answer = api.app.operator.handle(_request("POST", "/_emulator/rate_limit", body))
    assert answer.status == 400
    assert api.emulator.rate_limiter.per_second is None


def test_moving_the_emulator_clock_does_not_refill_the_bucket() -> None:
    clock = FakeClock()
    api = Api(clock)
    api.limit(2)
    assert [api.get(clock.now).status for _ in range(2)] == [200, 200]
    api.emulator.clock.advance(30 * 24 * 3600)
    assert api.get(clock.now).status == 429
