"""billing.yaml models, durations, and secrets from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from billing_reconciler.config import (
    BillingConfig,
    ConfigError,
    Secret,
    deprecated_spellings,
    key_mode,
    load_environment,
    mask,
    parse_duration,
    redact,
)
from tests import compat_files

# Frontier's sample config, vendored from ../shared/compat (tests/compat/).
SAMPLE = compat_files.FRONTIER_BILLING
KEY = "sk_test_51AbCdEfGhIjKlMnOp1234"


def test_defaults_are_frontiers() -> None:
    billing = BillingConfig().billing
    assert billing.plan_change.proration_behavior == "create_prorations"
    assert billing.plan_change.immediate_proration_behavior == "create_prorations"
    assert billing.plan_change.collection_method == "charge_automatically"
    assert billing.subscription.behavior_after_trial == "release"
    assert billing.product.seat_change_behavior == "exact"
    assert billing.customer.credit_overdraft_invoice_day == 1
    assert billing.customer.credit_overdraft_invoice_range_shift == 0
    assert billing.plans_path == "plans"
    interval = billing.refresh_interval
    assert (interval.customer, interval.subscription, interval.checkout) == (60, 60, 60)
    assert (interval.invoice, interval.catalog) == (300, 300)


def test_reconcile_defaults() -> None:
    reconcile = BillingConfig().reconcile
    assert reconcile.installation_id == "default"
    assert reconcile.prune is False
    assert reconcile.max_archive_fraction == 0.25
    assert reconcile.drift == "correct"
    assert reconcile.rate_limit_for("test") == 25
    assert reconcile.rate_limit_for("live") == 100
    assert reconcile.adopt == ()


def test_frontier_sample_loads_with_british_spelling_warning() -> None:
    raw = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    config = BillingConfig.model_validate(raw)
    assert config.billing.subscription.behavior_after_trial == "release"
    assert config.billing.refresh_interval.invoice == 300
    [(loc, message)] = deprecated_spellings(raw)
    assert loc == ("billing", "subscription", "behaviour_after_trial")
    assert "British" in message


def test_british_spelling_sets_the_value() -> None:
    raw = {"billing": {"subscription": {"behaviour_after_trial": "cancel"}}}
    assert BillingConfig.model_validate(raw).billing.subscription.behavior_after_trial == "cancel"


def test_both_spellings_disagreeing_is_an_error() -> None:
    raw = {
        "billing": {
            "subscription": {"behaviour_after_trial": "cancel", "behavior_after_trial": "release"}
        }
    }
    with pytest.raises(ValidationError, match="disagree"):
        BillingConfig.model_validate(raw)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("2m", 120), ("1h", 3600), ("1h30m", 5400), ("0", 0), (0, 0)],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["60", 60, "1d", "m", "1.5h", True, "", "-1m"])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_stripe_key_in_yaml_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as info:
        BillingConfig.model_validate({"billing": {"stripe_key": KEY}})
    messages = [e["msg"] for e in info.value.errors()]
    assert any("STRIPE_API_KEY" in m for m in messages)
    assert not any(KEY in m for m in messages)


def test_empty_secrets_in_yaml_are_fine() -> None:
    config = BillingConfig.model_validate(
        {"billing": {"stripe_key": "", "stripe_webhook_secrets": []}}
    )
    assert config.billing.stripe_key == ""


def test_webhook_secret_in_yaml_is_refused() -> None:
    with pytest.raises(ValidationError, match="BILLING_WEBHOOK_SECRETS"):
        BillingConfig.model_validate({"billing": {"stripe_webhook_secrets": ["whsec_x"]}})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"billing": {"customer": {"credit_overdraft_invoice_day": 0}}}, "greater than"),
        ({"billing": {"customer": {"credit_overdraft_invoice_day": 32}}}, "less than"),
        ({"billing": {"plan_change": {"proration_behavior": "sometimes"}}}, "Input should be"),
        ({"billing": {"default_currency": "usx"}}, "ISO 4217"),
        ({"billing": {"payment_method_config": [{"type": "cash"}]}}, "Input should be"),
        ({"billing": {"payment_method_config": [{"type": "card", "min": 5, "max": 1}]}}, "min"),
        ({"reconcile": {"max_archive_fraction": 1.5}}, "less than"),
        ({"reconcile": {"drift": "ignore"}}, "Input should be"),
        ({"reconcile": {"installation_id": "has space"}}, "pattern"),
        ({"reconcile": {"adopt": ["price/only_product"]}}, "pattern"),
        ({"billing": {"stripe_auto_tax": "yes"}}, "boolean"),
        ({"billing": {"unknown": 1}}, "Extra inputs"),
    ],
)
def test_invalid_settings(raw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        BillingConfig.model_validate(raw)


def test_adopt_keys_are_lower_cased() -> None:
    config = BillingConfig.model_validate(
        {"reconcile": {"adopt": ["Product/Basic", "price/basic/monthly"]}}
    )
    assert config.reconcile.adopt == ("product/basic", "price/basic/monthly")


def test_config_is_frozen() -> None:
    config = BillingConfig()
    with pytest.raises(ValidationError):
        config.reconcile.prune = True  # type: ignore[misc]


def test_secret_repr_and_str_are_redacted() -> None:
    secret = Secret(KEY)
    assert repr(secret) == "Secret('sk_test_…1234')"
    assert str(secret) == "sk_test_…1234"
    assert KEY not in f"{secret} {secret!r}"
    assert secret.reveal() == KEY


def test_mask_hides_short_secrets_entirely() -> None:
    assert mask("whsec_abc") == "whsec_…"


def test_redact_scrubs_every_key_shape() -> None:
    text = f"a {KEY} b rk_live_ZZZZZZZZZZZZZZZZ9999 c whsec_QWERTYUIOPASDFGH5678 d"
    assert redact(text) == "a sk_test_…1234 b rk_live_…9999 c whsec_…5678 d"


def test_key_mode() -> None:
    assert key_mode(KEY) == "test"
    assert key_mode(Secret("rk_live_abcdefghijkl")) == "live"
    with pytest.raises(ConfigError):
        key_mode("pk_test_abcdefgh")


def test_environment_from_variables(tmp_path: Path) -> None:
    env = {
        "STRIPE_API_KEY": KEY,
        "BILLING_WEBHOOK_SECRETS": "whsec_new1234567890,whsec_old1234567890",
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
    }
    loaded = load_environment(env, desired_dir=tmp_path / "desired")
    assert loaded.stripe_api_key == Secret(KEY)
    assert [s.reveal() for s in loaded.webhook_secrets] == [
        "whsec_new1234567890",
        "whsec_old1234567890",
    ]
    assert loaded.database_url == f"sqlite:///{tmp_path.resolve()}/.billing/state.db"
    assert loaded.api_base == "http://127.0.0.1:12111"
    assert KEY not in repr(loaded)


def test_environment_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n", encoding="utf-8")
    (tmp_path / "hooks").write_text("whsec_a1234567890\nwhsec_b1234567890\n", encoding="utf-8")
    env = {
        "STRIPE_API_KEY_FILE": str(tmp_path / "key"),
        "BILLING_WEBHOOK_SECRETS_FILE": str(tmp_path / "hooks"),
        "BILLING_DATABASE_URL": "postgresql://u:pw@db/billing",
    }
    loaded = load_environment(env)
    assert loaded.stripe_api_key is not None
    assert loaded.stripe_api_key.reveal() == KEY
    assert len(loaded.webhook_secrets) == 2
    assert loaded.database_url_redacted == "postgresql://u:***@db/billing"
    assert "pw" not in repr(loaded)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"STRIPE_API_KEY": KEY, "STRIPE_API_KEY_FILE": "/x"}, "not both"),
        ({"STRIPE_API_KEY_FILE": "/nonexistent/key"}, "cannot read"),
        ({"STRIPE_API_KEY": "pk_test_abcdefghijklmnop"}, "publishable"),
    ],
)
def test_environment_errors(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        load_environment(env)
    assert "abcdefghijklmnop" not in str(info.value)


def test_no_key_is_fine_for_validation_only() -> None:
    loaded = load_environment({})
    assert loaded.stripe_api_key is None
    assert loaded.webhook_secrets == ()
