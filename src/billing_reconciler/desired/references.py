"""Cross-reference rules of DESIGN §3: checks that need more than one object.

Each rule is a small function returning diagnostics positioned at the node that is wrong
(the plan's product reference, the duplicate name, the config key). References to entries
that failed their own validation are not reported again: the user already has that error.
Nor are references to names a plan file that failed to parse may define: one mistake (a YAML
syntax error, a duplicate key) gets one error, not one more per plan naming its products.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from billing_reconciler.config import BillingConfig
from billing_reconciler.desired.diagnostics import Diagnostic
from billing_reconciler.desired.formats import Kind, Located, PlanRefs
from billing_reconciler.desired.state import FeatureSpec, PlanSpec, ProductSpec
from billing_reconciler.desired.yaml_source import Loc, SourceDocument

_Entry = Located[FeatureSpec] | Located[ProductSpec] | Located[PlanSpec]


@dataclass(frozen=True, slots=True)
class UnparsedFiles:
    """Plan files that failed to parse: their text (lower-case), or None if unreadable."""

    texts: tuple[str | None, ...] = ()

    def may_define(self, name: str) -> bool:
        """Whether `name` occurs as a whole word in one of them (or one could not be read).

        A word match, not a parse: the file is broken, so this is the best there is, and a
        false match only postpones an error until the file parses again.
        """
        word = re.compile(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])")
        return any(text is None or word.search(text) for text in self.texts)


@dataclass(frozen=True, slots=True)
class Catalog:
    """The normalized entries to cross-check, with where they came from."""

    config: BillingConfig
    config_document: SourceDocument | None
    features: list[Located[FeatureSpec]]
    """Declared features only."""
    implied_features: list[Located[FeatureSpec]]
    """Features products grant without a declaration (Frontier creates them)."""
    products: list[Located[ProductSpec]]
    plans: list[Located[PlanSpec]]
    invalid_names: dict[Kind, set[str]]
    unparsed: UnparsedFiles = field(default_factory=UnparsedFiles)
    invalid_plans: list[Located[PlanRefs]] = field(default_factory=list)
    """What plans that failed their own validation still reference (checked too)."""

    def unknown(self, kind: Kind, name: str) -> bool:
        """Whether `name` is worth reporting as missing: not an entry that failed its own
        validation, and not possibly defined in a file that could not be parsed."""
        return name not in self.invalid_names[kind] and not self.unparsed.may_define(name)

    def product(self, name: str) -> ProductSpec | None:
        """The product called `name` (lower-case), if any."""
        return next((p.item for p in self.products if p.item.name == name), None)

    def plan(self, name: str) -> PlanSpec | None:
        """The plan called `name` (lower-case), if any."""
        return next((p.item for p in self.plans if p.item.name == name), None)

    def config_diagnostic(self, loc: Loc, message: str) -> Iterator[Diagnostic]:
        """An error at a billing.yaml key."""
        if self.config_document is not None:
            yield self.config_document.diagnostic(loc, message)


def check_references(catalog: Catalog) -> list[Diagnostic]:
    """Every cross-reference diagnostic of the catalog."""
    rules = (
        _duplicate_names,
        _duplicate_prices,
        _currency_options,
        _lookup_keys,
        _meters,
        _plan_products,
        _per_seat,
        _prices_at_interval,
        _distinct_plans,
        _overdraft_product,
        _default_plan,
        _adopt_keys,
    )
    return [d for rule in rules for d in rule(catalog)]


def _duplicate_names(catalog: Catalog) -> Iterator[Diagnostic]:
    groups: list[tuple[str, Iterable[_Entry]]] = [
        ("feature", catalog.features),
        ("product", catalog.products),
        ("plan", catalog.plans),
    ]
    for kind, entries in groups:
        seen: dict[str, _Entry] = {}
        for entry in entries:
            first = seen.setdefault(entry.item.name, entry)
            if first is not entry:
                where = first.document.position((*first.loc, "name"))
                yield entry.diagnostic(
                    f"{kind} name '{entry.item.name}' is already used at "
                    f"{first.document.path}:{where.line} (names are case-insensitive)",
                    at=("name",),
                )


def _duplicate_prices(catalog: Catalog) -> Iterator[Diagnostic]:
    for product in catalog.products:
        seen: set[str] = set()
        for index, price in enumerate(product.item.prices):
            if price.name in seen:
                yield product.diagnostic(
                    f"product '{product.item.name}' has two prices named '{price.name}'",
                    at=("prices", index, "name"),
                )
            seen.add(price.name)


def _currency_options(catalog: Catalog) -> Iterator[Diagnostic]:
    for product in catalog.products:
        for index, price in enumerate(product.item.prices):
            if price.currency in price.currency_options:
                yield product.diagnostic(
                    f"currency_options repeats the price's own currency '{price.currency}'",
                    at=("prices", index, "currency_options", price.currency),
                )
            for code, option in price.currency_options.items():
                if price.billing_scheme == "per_unit" and option.amount is None:
                    yield product.diagnostic(
                        f"currency_options.{code} needs an amount",
                        at=("prices", index, "currency_options", code),
                    )


def _lookup_keys(catalog: Catalog) -> Iterator[Diagnostic]:
    # Stripe allows one active price per lookup key; defaults (PRODUCT_PRICE) count too.
    seen: dict[str, str] = {}
    for product in catalog.products:
        for index, price in enumerate(product.item.prices):
            key = price.effective_lookup_key(product.item.name)
            owner = f"{product.item.name}/{price.name}"
            if seen.setdefault(key, owner) != owner:
                yield product.diagnostic(
                    f"lookup_key '{key}' is also used by price {seen[key]}",
                    at=("prices", index),
                )


def _meters(catalog: Catalog) -> Iterator[Diagnostic]:
    # Prices naming one event share one Stripe meter, so their meter settings must agree.
    seen: dict[str, tuple[str, object]] = {}
    for product in catalog.products:
        for index, price in enumerate(product.item.prices):
            if price.meter is None:
                continue
            owner = f"{product.item.name}/{price.name}"
            first = seen.setdefault(price.meter.event_name, (owner, price.meter))
            if first[1] != price.meter:
                yield product.diagnostic(
                    f"meter event_name '{price.meter.event_name}' is also used by price "
                    f"{first[0]} with different meter settings",
                    at=("prices", index, "meter"),
                )


def _plan_products(catalog: Catalog) -> Iterator[Diagnostic]:
    known = {p.item.name for p in catalog.products}
    plans: list[
        tuple[str | None, Located[PlanSpec] | Located[PlanRefs], Iterable[tuple[int, str]]]
    ] = [(plan.item.name, plan, enumerate(plan.item.products)) for plan in catalog.plans]
    plans += [(plan.item.name, plan, plan.item.products) for plan in catalog.invalid_plans]
    for plan_name, plan, references in plans:
        seen: set[str] = set()
        for index, name in references:
            at = ("products", index, "name")
            if name in seen:
                yield plan.diagnostic(f"plan lists product '{name}' twice", at=at)
            seen.add(name)
            if name not in known and catalog.unknown("product", name):
                which = f"plan '{plan_name}'" if plan_name else "plan"
                yield plan.diagnostic(f"{which} references unknown product '{name}'", at=at)


def _per_seat(catalog: Catalog) -> Iterator[Diagnostic]:
    for plan in catalog.plans:
        seats = [
            (i, n) for i, n in enumerate(plan.item.products) if _behavior(catalog, n) == "per_seat"
        ]
        for index, name in seats[1:]:
            yield plan.diagnostic(
                f"plan '{plan.item.name}' has more than one per_seat product "
                f"('{seats[0][1]}' and '{name}'); a subscription counts seats once",
                at=("products", index, "name"),
            )


def _behavior(catalog: Catalog, name: str) -> str | None:
    product = catalog.product(name)
    return product.behavior if product else None


def _prices_at_interval(catalog: Catalog) -> Iterator[Diagnostic]:
    for plan in catalog.plans:
        interval = plan.item.interval
        currencies: list[set[str]] = []
        for index, name in enumerate(plan.item.products):
            product = catalog.product(name)
            if product is None or product.behavior == "credits":
                continue
            prices = [p for p in product.prices if p.active and p.interval == interval]
            if not prices:
                yield plan.diagnostic(
                    f"product '{name}' has no active price with interval '{interval}', "
                    f"which plan '{plan.item.name}' bills at",
                    at=("products", index, "name"),
                )
                continue
            currencies.append({c for p in prices for c in (p.currency, *p.currency_options)})
        if currencies and not set.intersection(*currencies):
            yield plan.diagnostic(
                f"plan '{plan.item.name}': its products share no currency at interval "
                f"'{interval}' (a Stripe subscription bills every item in one currency)",
                at=("products",),
            )


def _distinct_plans(catalog: Catalog) -> Iterator[Diagnostic]:
    seen: dict[tuple[frozenset[str], str], str] = {}
    for plan in catalog.plans:
        key = (frozenset(plan.item.products), plan.item.interval)
        first = seen.setdefault(key, plan.item.name)
        if first != plan.item.name:
            yield plan.diagnostic(
                f"plan '{plan.item.name}' has the same products and interval as plan "
                f"'{first}'; customers could not be told apart",
                at=("name",),
            )


def _overdraft_product(catalog: Catalog) -> Iterator[Diagnostic]:
    name = catalog.config.billing.customer.credit_overdraft_product.lower()
    if not name:
        return
    loc = ("billing", "customer", "credit_overdraft_product")
    product = catalog.product(name)
    if product is None and catalog.unknown("product", name):
        yield from catalog.config_diagnostic(
            loc, f"credit_overdraft_product '{name}' does not exist"
        )
    elif product is None:
        return
    elif product.behavior != "credits":
        yield from catalog.config_diagnostic(
            loc,
            f"credit_overdraft_product '{name}' has behavior '{product.behavior}'; it must be "
            "a behavior: credits product",
        )
    elif not any(p.active for p in product.prices):
        yield from catalog.config_diagnostic(
            loc, f"credit_overdraft_product '{name}' needs an active price (its first is used)"
        )
    elif not _priced_in(product, catalog.config.billing.currency):
        currency = catalog.config.billing.currency
        yield from catalog.config_diagnostic(
            loc,
            f"credit_overdraft_product '{name}' has no active price in the default currency "
            f"{currency.upper()} (an amount in {currency}, or a currency_options.{currency} "
            "amount); overdraft invoices are in the default currency",
        )
    elif not product.config.credit_amount:
        yield from catalog.config_diagnostic(
            loc,
            f"credit_overdraft_product '{name}' needs config.credit_amount: a credit's price "
            "is the price's amount / credit_amount",
        )


def _priced_in(product: ProductSpec, currency: str) -> bool:
    """Whether an active per-unit price of `product` has an amount in `currency`."""
    for price in product.prices:
        if not price.active or price.billing_scheme != "per_unit":
            continue
        option = price.currency_options.get(currency)
        if price.currency == currency or (option is not None and option.amount is not None):
            return True
    return False


def _default_plan(catalog: Catalog) -> Iterator[Diagnostic]:
    name = catalog.config.billing.customer.default_plan.lower()
    if not name:
        return
    loc = ("billing", "customer", "default_plan")
    plan = catalog.plan(name)
    if plan is None:
        if catalog.unknown("plan", name):
            yield from catalog.config_diagnostic(loc, f"default_plan '{name}' does not exist")
        return
    charged = [
        f"{product.name}/{price.name}"
        for product in filter(None, map(catalog.product, plan.products))
        for price in product.prices
        if price.active and not price.is_free()
    ]
    if charged:
        yield from catalog.config_diagnostic(
            loc,
            f"default_plan '{name}' is not free: price(s) {', '.join(charged)} charge money; "
            "every new organization is subscribed to it without paying",
        )


def _adopt_keys(catalog: Catalog) -> Iterator[Diagnostic]:
    features = catalog.features + catalog.implied_features
    known = {f"feature/{f.item.name}" for f in features}
    known |= {f"plan/{p.item.name}" for p in catalog.plans}
    for product in catalog.products:
        known.add(f"product/{product.item.name}")
        known |= {f"price/{product.item.name}/{price.name}" for price in product.item.prices}
        known |= {f"meter/{p.meter.event_name}" for p in product.item.prices if p.meter}
    document = catalog.config_document
    for index, key in enumerate(catalog.config.reconcile.adopt):
        named = key.rsplit("/", 1)[-1]
        if key not in known and document is not None and not catalog.unparsed.may_define(named):
            yield document.diagnostic(
                ("reconcile", "adopt", index),
                f"adopt: '{key}' names nothing in the desired state",
                severity="warning",
            )
