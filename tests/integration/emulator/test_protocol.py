"""Protocol fidelity through the real SDK: auth, versions, pagination, expand, idempotency,
rate limiting, faults, latency and the request log."""

from __future__ import annotations

import time

import httpx
import pytest
import stripe

from stripe_emulator.server import EmbeddedEmulator
from tests.fixtures.emulator import EmulatorHandle, make_client


def _seed_products(client: stripe.StripeClient, count: int) -> list[str]:
    return [client.v1.products.create({"name": f"p{i}"}).id for i in range(count)]


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("sk_live_abcdefghijklmnop", stripe.AuthenticationError),
        ("rk_live_abcdefghijklmnop", stripe.AuthenticationError),
        ("pk_test_abcdefghijklmnop", stripe.AuthenticationError),
        ("sk_test_", stripe.AuthenticationError),
    ],
)
def test_only_test_mode_secret_keys_are_accepted(
    emulator: EmulatorHandle, key: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        make_client(emulator.url, api_key=key).v1.products.list()


def test_missing_key_is_401(emulator: EmulatorHandle) -> None:
    response = httpx.get(f"{emulator.url}/v1/products")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_restricted_test_key_is_read_only(emulator: EmulatorHandle) -> None:
    client = make_client(emulator.url, api_key="rk_test_readonly")
    assert client.v1.products.list().data == []
    with pytest.raises(stripe.PermissionError):
        client.v1.products.create({"name": "nope"})


def test_basic_auth_is_accepted(emulator: EmulatorHandle) -> None:
    response = httpx.get(f"{emulator.url}/v1/products", auth=("sk_test_basic", ""))
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": "/v1/products",
    }


def test_other_api_version_is_refused(emulator: EmulatorHandle) -> None:
    client = make_client(emulator.url, stripe_version="2020-08-27")
    with pytest.raises(stripe.InvalidRequestError, match=r"2026-10-28\.endive"):
        client.v1.products.list()


def test_unknown_url_is_404(stripe_client: stripe.StripeClient, emulator: EmulatorHandle) -> None:
    response = httpx.get(f"{emulator.url}/v1/nothing_here", auth=("sk_test_x", ""))
    assert response.status_code == 404
    assert "Unrecognized request URL" in response.json()["error"]["message"]


@pytest.mark.parametrize(("count", "has_more"), [(100, False), (101, True)])
def test_pagination_edges(stripe_client: stripe.StripeClient, count: int, has_more: bool) -> None:
    ids = _seed_products(stripe_client, count)
    page = stripe_client.v1.products.list({"limit": 100})
    assert len(page.data) == 100
    assert page.has_more is has_more
    assert [p.id for p in page.data] == list(reversed(ids))[:100]
    assert [
        p.id for p in stripe_client.v1.products.list({"limit": 100}).auto_paging_iter()
    ] == list(reversed(ids))


def test_cursors(stripe_client: stripe.StripeClient) -> None:
    ids = list(reversed(_seed_products(stripe_client, 7)))  # newest first, as Stripe lists
    after = stripe_client.v1.products.list({"limit": 3, "starting_after": ids[2]})
    assert [p.id for p in after.data] == ids[3:6]
    assert after.has_more is True
    before = stripe_client.v1.products.list({"limit": 3, "ending_before": ids[5]})
    assert [p.id for p in before.data] == ids[2:5]
    assert before.has_more is True
    first = stripe_client.v1.products.list({"limit": 3, "ending_before": ids[2]})
    assert [p.id for p in first.data] == ids[0:2]
    assert first.has_more is False
    assert stripe_client.v1.products.list().data.__len__() == 7  # default limit 10
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.products.list({"starting_after": ids[0], "ending_before": ids[1]})


def test_list_filters(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create({"name": "A"})
    other = stripe_client.v1.products.create({"name": "B", "active": False})
    monthly = stripe_client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 5,
            "recurring": {"interval": "month"},
        }
    )
    one_time = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "EUR", "unit_amount": 7}
    )
    assert one_time.currency == "eur"
    assert [p.id for p in stripe_client.v1.prices.list({"type": "one_time"}).data] == [one_time.id]
    assert [p.id for p in stripe_client.v1.prices.list({"currency": "usd"}).data] == [monthly.id]
    recurring = stripe_client.v1.prices.list({"recurring": {"interval": "month"}}).data
    assert [p.id for p in recurring] == [monthly.id]
    assert [p.id for p in stripe_client.v1.products.list({"active": False}).data] == [other.id]
    chosen = stripe_client.v1.products.list({"ids": [product.id, "prod_missing"]}).data
    assert [p.id for p in chosen] == [product.id]


def test_expand_on_objects_and_lists(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create(
        {"name": "E", "default_price_data": {"currency": "usd", "unit_amount": 100}}
    )
    price_id = str(product.default_price)
    price = stripe_client.v1.prices.retrieve(price_id, {"expand": ["product.default_price"]})
    assert price.product.name == "E"  # type: ignore[union-attr]
    assert price.product.default_price.id == price_id  # type: ignore[union-attr]
    listed = stripe_client.v1.prices.list({"expand": ["data.product"]}).data[0]
    assert listed.product.id == product.id  # type: ignore[union-attr]
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        stripe_client.v1.prices.list({"expand": ["product"]})
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        stripe_client.v1.prices.retrieve(price_id, {"expand": ["nickname"]})


def test_tiers_and_currency_options_only_when_expanded(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create({"name": "Tiered"})
    price = stripe_client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 100}, {"up_to": "inf", "unit_amount": 80}],
            "recurring": {"interval": "month"},
            "currency_options": {
                "eur": {
                    "tiers": [{"up_to": 10, "unit_amount": 90}, {"up_to": "inf", "unit_amount": 70}]
                }
            },
        }
    )
    assert "tiers" not in price
    assert "currency_options" not in price
    full = stripe_client.v1.prices.retrieve(price.id, {"expand": ["tiers", "currency_options"]})
    assert [t.up_to for t in full.tiers or []] == [10, None]
    assert full.tiers is not None
    assert str(full.tiers[0].unit_amount_decimal) == "100"
    assert full.currency_options is not None
    assert set(full.currency_options.to_dict()) == {"usd", "eur"}
    listed = stripe_client.v1.prices.list({"expand": ["data.tiers"]}).data[0]
    assert listed.tiers is not None
    assert len(listed.tiers) == 2


def test_idempotent_replay_and_conflict(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "create-team"}
    first = stripe_client.v1.products.create({"name": "Team"}, options)
    again = stripe_client.v1.products.create({"name": "Team"}, options)
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(stripe_client.v1.products.list().data) == 1
    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.products.create({"name": "Other"}, options)
    replayed = [e.replayed for e in emulator.control.requests(method="POST")]
    assert replayed == [False, True, False]


def test_idempotency_keys_expire_after_24_hours(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "expiring"}
    first = stripe_client.v1.products.create({"name": "One"}, options)
    emulator.control.advance(24 * 3600 + 1)
    second = stripe_client.v1.products.create({"name": "Two"}, options)
    assert second.id != first.id


def test_validation_errors_are_not_remembered(stripe_client: stripe.StripeClient) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "bad-then-good"}
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.products.create({"name": "X", "bogus": 1}, options)  # type: ignore[typeddict-unknown-key]
    assert stripe_client.v1.products.create({"name": "X"}, options).name == "X"


def _list_repeatedly(client: stripe.StripeClient, times: int) -> None:
    for _ in range(times):
        client.v1.products.list()


def test_rate_limit_answers_429(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    emulator.control.set_rate_limit(3)
    # A bucket of 3 tokens refilled at 3 a second: 20 calls back to back run it dry.
    with pytest.raises(stripe.RateLimitError) as refused:
        _list_repeatedly(stripe_client, 20)
    assert (refused.value.json_body or {})["error"]["code"] == "rate_limit"
    assert refused.value.headers is not None
    assert refused.value.headers.get("Stripe-Should-Retry") == "true"
    emulator.control.set_rate_limit(None)
    assert 429 in {e.status for e in emulator.control.requests()}


def test_fault_500_is_not_committed(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    emulator.control.add_fault(method="POST", path_prefix="/v1/products", nth=2, kind="500")
    stripe_client.v1.products.create({"name": "first"})
    with pytest.raises(stripe.APIError):
        stripe_client.v1.products.create({"name": "second"})
    stripe_client.v1.products.create({"name": "third"})
    assert [p.name for p in stripe_client.v1.products.list().data] == ["third", "first"]


def test_drop_after_commit_then_retry_replays(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    emulator.control.add_fault(
        method="POST", path_prefix="/v1/products", nth=1, kind="drop_after_commit"
    )
    options: stripe.RequestOptions = {"idempotency_key": "crash-once"}
    with pytest.raises(stripe.APIConnectionError):
        stripe_client.v1.products.create({"name": "Once"}, options)
    retried = stripe_client.v1.products.create({"name": "Once"}, options)
    assert retried.last_response is not None
    assert retried.last_response.headers.get("Idempotent-Replayed") == "true"
    assert [p.id for p in stripe_client.v1.products.list().data] == [retried.id]


def test_sdk_retries_a_dropped_connection_with_the_same_key(emulator: EmulatorHandle) -> None:
    emulator.control.add_fault(
        method="POST", path_prefix="/v1/customers", nth=1, kind="drop_after_commit"
    )
    client = make_client(emulator.url, max_network_retries=2)
    customer = client.v1.customers.create({"email": "a@example.com"})
    assert [c.id for c in client.v1.customers.list().data] == [customer.id]
    keys = {e.idempotency_key for e in emulator.control.requests(method="POST")}
    assert len(keys) == 1


def test_timeout_fault_hangs_past_the_client_timeout(emulator: EmulatorHandle) -> None:
    emulator.control.add_fault(method="GET", path_prefix="/v1/products", nth=1, kind="timeout")
    client = make_client(emulator.url, http_client=stripe.RequestsClient(timeout=0.3))
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        client.v1.products.list()
    assert time.monotonic() - started < 5
    assert client.v1.products.list().data == []


def test_latency_is_injected(stripe_client: stripe.StripeClient, emulator: EmulatorHandle) -> None:
    emulator.control.set_latency(100)
    started = time.monotonic()
    stripe_client.v1.products.list()
    assert time.monotonic() - started >= 0.1


def test_request_log_counts_calls(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    product = stripe_client.v1.products.create({"name": "Log"})
    stripe_client.v1.products.retrieve(product.id)
    stripe_client.v1.prices.list()
    log = emulator.control.requests()
    assert [(e.method, e.path, e.status) for e in log] == [
        ("POST", "/v1/products", 200),
        ("GET", f"/v1/products/{product.id}", 200),
        ("GET", "/v1/prices", 200),
    ]
    assert log[0].idempotency_key  # the SDK sends one on every POST
    assert len(emulator.control.requests(path_prefix="/v1/products")) == 2
    assert emulator.control.counters()["by_method"] == {"POST": 1, "GET": 2}
    emulator.control.clear_requests()
    assert emulator.control.requests() == []


def test_clock_control(stripe_client: stripe.StripeClient, emulator: EmulatorHandle) -> None:
    emulator.control.set_time(2_000_000_000)
    assert 2_000_000_000 <= emulator.control.now() < 2_000_000_010
    assert stripe_client.v1.products.create({"name": "Future"}).created >= 2_000_000_000
    emulator.control.advance(3600)
    assert emulator.control.now() >= 2_000_003_600


def test_state_file_survives_a_restart(tmp_path: pytest.TempPathFactory) -> None:
    state = tmp_path / "stripe.json"  # type: ignore[operator]
    with EmbeddedEmulator(state_file=state) as first:
        client = make_client(first.url)
        product = client.v1.products.create({"name": "Kept"})
        client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 1})
    with EmbeddedEmulator(state_file=state) as second:
        client = make_client(second.url)
        assert client.v1.products.retrieve(product.id).name == "Kept"
        assert len(client.v1.prices.list({"product": product.id}).data) == 1
        assert client.v1.products.create({"name": "New"}).id != product.id
