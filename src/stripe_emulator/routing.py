"""Map `(method, path)` to a resource handler and the SDK params class that validates it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stripe_emulator.core import RequestContext
from stripe_emulator.params import Params
from stripe_emulator.state import StripeObject

Handler = Callable[[RequestContext, Params, dict[str, str]], StripeObject]

_PARAMS_PACKAGE = "stripe.params"


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: `POST /v1/prices/{price}` -> handler, validated by `params`."""

    method: str
    segments: tuple[str, ...]
    params: str
    handler: Handler

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """Path parameters when `parts` fits this route's template."""
        captured: dict[str, str] = {}
        for template, part in zip(self.segments, parts, strict=True):
            if template.startswith("{"):
                captured[template[1:-1]] = part
            elif template != part:
                return None
        return captured


class Router:
    """Routes grouped by method and segment count; literal segments win over `{ids}`."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, int], list[Route]] = {}

    def add(self, method: str, template: str, params: str, handler: Handler) -> None:
        """Register `handler`; `params` is a class path under `stripe.params`,
        e.g. `_price_update_params.PriceUpdateParams`."""
        segments = tuple(template.strip("/").split("/"))
        route = Route(method, segments, f"{_PARAMS_PACKAGE}.{params}", handler)
        bucket = self._routes.setdefault((method, len(segments)), [])
        bucket.append(route)
        bucket.sort(key=lambda r: sum(s.startswith("{") for s in r.segments))

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route and its path parameters, or None (Stripe's 404)."""
        parts = path.strip("/").split("/")
        for route in self._routes.get((method, len(parts)), []):
            captured = route.match(parts)
            if captured is not None:
                return route, captured
        return None

    def routes(self) -> list[Route]:
        """Every registered route (for docs and round-trip tests)."""
        return [r for bucket in self._routes.values() for r in bucket]
