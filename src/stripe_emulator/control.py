"""`EmulatorControl`: a small httpx client of the operator API (`/_emulator/*`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

FaultKind = Literal["500", "timeout", "drop_after_commit"]


@dataclass(frozen=True, slots=True)
class RequestLogEntry:
    """One API request the emulator served."""

    method: str
    path: str
    status: int
    idempotency_key: str | None
    timestamp: float
    request_id: str = ""
    replayed: bool = False


class EmulatorControl:
    """Operator controls of the emulator at `url` (e.g. `http://127.0.0.1:54321`)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}/_emulator", timeout=timeout)

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    def reset(self) -> None:
        """Empty the account and restore default controls (latency, rate limit, faults)."""
        self._post("reset")

    def requests(
        self, *, method: str | None = None, path_prefix: str | None = None
    ) -> list[RequestLogEntry]:
        """The API requests served since the last reset/clear, oldest first."""
        query = {k: v for k, v in (("method", method), ("path_prefix", path_prefix)) if v}
        body = self._get("requests", params=query)
        return [RequestLogEntry(**entry) for entry in body["requests"]]

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._call("DELETE", "requests")

    def counters(self) -> dict[str, Any]:
        """Request counts: total, by method, by status, by endpoint."""
        return self._get("counters")

    def set_latency(self, ms: float) -> None:
        """Delay every API request by `ms` milliseconds."""
        self._post("latency", {"ms": ms})

    def set_hang_seconds(self, seconds: float) -> None:
        """How long a `timeout` fault holds a request when the client does not give up."""
        self._post("hang", {"seconds": seconds})

    def set_rate_limit(self, per_second: int | None, *, burst: int | None = None) -> None:
        """Rate-limit the API as Stripe does, with a token bucket: `per_second` tokens a
        second refill a bucket of `burst` (default `per_second`), each request takes one, a
        request finding none is answered 429 (None: unlimited). The bucket starts full."""
        body: dict[str, Any] = {"per_second": per_second}
        if burst is not None:
            body["burst"] = burst
        self._post("rate_limit", body)

    def add_fault(self, *, method: str, path_prefix: str, nth: int, kind: FaultKind) -> None:
        """Fail the `nth` request matching method and path prefix (counted from now)."""
        self._post(
            "faults", {"method": method, "path_prefix": path_prefix, "nth": nth, "kind": kind}
        )

    def faults(self) -> list[dict[str, Any]]:
        """The armed faults and how many requests each has seen."""
        faults: list[dict[str, Any]] = self._get("faults")["faults"]
        return faults

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self._call("DELETE", "faults")

    def now(self) -> float:
        """Emulator time (Unix seconds)."""
        return float(self._get("clock")["now"])

    def set_time(self, ts: float) -> None:
        """Jump the emulator clock to `ts`."""
        self._post("clock", {"time": ts})

    def advance(self, seconds: float) -> None:
        """Move the emulator clock forward."""
        self._post("clock", {"advance": seconds})

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery attempt so far."""
        deliveries: list[dict[str, Any]] = self._get("webhooks/deliveries")["deliveries"]
        return deliveries

    def wait_webhooks_idle(self, *, timeout: float = 5.0) -> None:
        """Block until no delivery is queued or in flight."""
        deadline = time.monotonic() + timeout
        while not self._get("webhooks/deliveries")["idle"]:
            if time.monotonic() > deadline:
                raise TimeoutError("webhook deliveries still pending")
            time.sleep(0.01)

    def set_webhook_retry_delays(self, delays: list[float]) -> None:
        """Seconds to wait before each retry of a failed delivery."""
        self._post("webhooks/config", {"retry_delays": delays})

    def set_billing_retries(
        self,
        *,
        days: list[int] | None = None,
        subscription_status: str | None = None,
        invoice_status: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """The automatic retry schedule of failed subscription invoice payments: `days`
        between attempts (default 3, 5, 7), the subscription's status once all failed
        (`canceled` default, `unpaid`, `past_due`), the invoice's (`open` default,
        `uncollectible`); `enabled=False` retries nothing. Reset by `reset()`."""
        body: dict[str, Any] = {
            k: v
            for k, v in (
                ("days", days),
                ("subscription_status", subscription_status),
                ("invoice_status", invoice_status),
                ("enabled", enabled),
            )
            if v is not None
        }
        return self._post("billing/retries", body)

    def billing_retries(self) -> dict[str, Any]:
        """The current retry settings."""
        return self._get("billing/retries")

    def fund_cash_balance(
        self, customer: str, amount: int, currency: str, *, reference: str | None = None
    ) -> dict[str, Any]:
        """A test bank transfer into the customer's cash balance, applied to its waiting
        `customer_balance` payment intents (the same logic as
        `POST /v1/test_helpers/customers/{customer}/fund_cash_balance`); returns the `funded`
        cash balance transaction."""
        body: dict[str, Any] = {"amount": amount, "currency": currency}
        if reference is not None:
            body["reference"] = reference
        return self._post(f"customers/{customer}/fund_cash_balance", body)

    def authenticate_payment_intent(self, intent: str, outcome: str = "succeed") -> dict[str, Any]:
        """Complete (`succeed`) or fail (`fail`) the 3D Secure step of a payment intent in
        `requires_action`, as the customer would; returns the payment intent."""
        return self._post(f"payment_intents/{intent}/authenticate", {"outcome": outcome})

    def authenticate_setup_intent(self, intent: str, outcome: str = "succeed") -> dict[str, Any]:
        """Complete or fail the authentication of a setup intent in `requires_action`."""
        return self._post(f"setup_intents/{intent}/authenticate", {"outcome": outcome})

    def complete_checkout_session(
        self,
        session: str,
        *,
        card: str | None = None,
        payment_method: str | None = None,
        quantity: int | None = None,
        address: dict[str, str] | None = None,
        email: str | None = None,
        name: str | None = None,
        authenticate: str | None = None,
    ) -> httpx.Response:
        """Do what the customer does on the hosted Checkout page: pay (or save a card) with a
        test `card` number or test `payment_method` (`pm_card_visa`), optionally changing the
        adjustable `quantity` and giving an `address`. The response is 200 with the completed
        session, or 402 with `{"error": {...}}` when the card declines (the session stays
        open) or needs 3D Secure (`"requires_action": true` and the intent; authenticate it
        with `authenticate_payment_intent`, or pass `authenticate="succeed"`)."""
        body: dict[str, Any] = {
            k: v
            for k, v in (
                ("card", card),
                ("payment_method", payment_method),
                ("quantity", quantity),
                ("address", address),
                ("email", email),
                ("name", name),
                ("authenticate", authenticate),
            )
            if v is not None
        }
        return self._http.post(f"/checkout/sessions/{session}/complete", json=body)

    def health(self) -> dict[str, Any]:
        """Object counts per type and the emulator time."""
        return self._get("health")

    def _get(self, name: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self._call("GET", name, params=params)

    def _post(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("POST", name, json=body or {})

    def _call(self, method: str, name: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, f"/{name}", **kwargs)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
