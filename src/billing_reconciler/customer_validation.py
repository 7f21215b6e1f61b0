"""The field rules of a billing account, in one place: the host API's request bodies
(`api.models`) and contract customer files (`desired.customer_models`) both build on these
types, so an account the API refuses is refused in YAML too, with the same message.

The limits are Stripe's where Stripe has one (a customer's `name` up to 256 characters,
`phone` up to 20; Stripe refuses longer values only when the reconcile writes them), the
tax id types are those of the pinned SDK (`stripe` 16.1: `tax_id_data[].type` of
`CustomerCreateParams`; a test keeps the two equal, as only the gateway imports the SDK),
`credit_min` and `due_in_days` are DESIGN §15/§17's (a credit minimum <= 0, a negative one
allowing an overdraft; 0-365 days to pay an invoice).

`field_path` and `stripe_field_path` spell a field's location one way everywhere
(`tax_ids[0].type`, `address.line1`): in API error details, YAML diagnostics and Stripe's
refusals mapped back.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from billing_reconciler.model_customers import (
    CONTROLLER_METADATA_KEYS,
    CUSTOMER_MARKER_KEYS,
    is_reserved_metadata_key,
)

MAX_NAME: Final[int] = 256
"""Stripe's limit on a customer's name."""
MAX_EMAIL: Final[int] = 320
"""A local part of 64 and a domain of 255 characters (Stripe takes up to 512)."""
MAX_PHONE: Final[int] = 20
"""Stripe's limit on a customer's phone (`must be at most 20 characters`)."""
MAX_ADDRESS_PART: Final[int] = 500
MAX_TAX_ID_VALUE: Final[int] = 64
MAX_TAX_IDS: Final[int] = 20
INT64_MIN: Final[int] = -(2**63)
INT64_MAX: Final[int] = 2**63 - 1
"""The range of every stored amount and balance (a signed 64-bit column)."""
MAX_DUE_IN_DAYS: Final[int] = 365
MAX_METADATA_KEYS: Final[int] = 50
"""Stripe's limit on an object's metadata keys."""
MAX_METADATA_KEY: Final[int] = 40
"""Stripe's limit on a metadata key's length."""
MAX_METADATA_VALUE: Final[int] = 500
"""Stripe's limit on a metadata value's length."""
ACCOUNT_METADATA_KEYS: Final[int] = (
    MAX_METADATA_KEYS - len(CUSTOMER_MARKER_KEYS) - len(CONTROLLER_METADATA_KEYS)
)
"""The keys a user may give an account's metadata: Stripe's 50 less the keys the customers
domain writes on its customer itself, the markers (DESIGN §14: `managed_by`, `br_key`,
`br_installation`, `br_revision`, `org_id`) and `auto_created` (§15)."""

#: `tax_id_data[].type` values of the pinned SDK (`CustomerCreateParamsTaxIdDatum.type`).
TAX_ID_TYPES: Final[frozenset[str]] = frozenset(
    {
        "ad_nrt",
        "ae_trn",
        "al_tin",
        "am_tin",
        "ao_tin",
        "ar_cuit",
        "au_abn",
        "au_acn",
        "au_arn",
        "au_wpn",
        "aw_tin",
        "az_tin",
        "ba_tin",
        "bb_tin",
        "bd_bin",
        "bf_ifu",
        "bg_uic",
        "bh_vat",
        "bj_ifu",
        "bo_tin",
        "br_cnpj",
        "br_cpf",
        "bs_tin",
        "bw_vat",
        "by_tin",
        "ca_bn",
        "ca_gst_hst",
        "ca_pst_bc",
        "ca_pst_mb",
        "ca_pst_sk",
        "ca_qst",
        "cd_nif",
        "ch_uid",
        "ch_vat",
        "ci_vat",
        "cl_tin",
        "cm_niu",
        "cn_tin",
        "co_nit",
        "cr_tin",
        "cv_nif",
        "cz_dic",
        "de_stn",
        "do_rcn",
        "ec_ruc",
        "eg_tin",
        "es_cif",
        "et_tin",
        "eu_oss_vat",
        "eu_vat",
        "fo_vat",
        "fr_siren",
        "fr_siret",
        "fr_spi",
        "gb_vat",
        "ge_vat",
        "gh_tin",
        "gi_tin",
        "gn_nif",
        "hk_br",
        "hr_oib",
        "hu_tin",
        "ic_nif",
        "id_npwp",
        "il_vat",
        "in_gst",
        "is_kt",
        "is_vat",
        "it_cf",
        "jp_cn",
        "jp_rn",
        "jp_trn",
        "ke_pin",
        "kg_tin",
        "kh_tin",
        "kr_brn",
        "kz_bin",
        "la_tin",
        "li_uid",
        "li_vat",
        "lk_vat",
        "ma_vat",
        "md_cf",
        "md_vat",
        "me_pib",
        "mk_vat",
        "mr_nif",
        "mu_vat",
        "mx_rfc",
        "my_frp",
        "my_itn",
        "my_sst",
        "mz_nuit",
        "ng_tin",
        "no_vat",
        "no_voec",
        "np_pan",
        "nz_bn",
        "nz_gst",
        "om_vat",
        "pe_ruc",
        "ph_tin",
        "pl_nip",
        "pt_nif",
        "py_ruc",
        "ro_tin",
        "rs_pib",
        "ru_inn",
        "ru_kpp",
        "sa_vat",
        "sg_gst",
        "sg_uen",
        "si_tin",
        "sm_coe",
        "sn_ninea",
        "sr_fin",
        "sv_nit",
        "th_vat",
        "tj_tin",
        "tr_tin",
        "tt_bir",
        "tt_vat",
        "tw_vat",
        "tz_vat",
        "ua_vat",
        "ug_tin",
        "us_ein",
        "uy_ruc",
        "uz_tin",
        "uz_vat",
        "ve_rif",
        "vn_tin",
        "za_vat",
        "zm_tin",
        "zw_tin",
    }
)

#: ISO 3166-1 alpha-2 codes (the officially assigned ones, and XK, which Stripe uses for
#: Kosovo).
COUNTRIES: Final[frozenset[str]] = frozenset(
    {
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "XK",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    }
)

# An email address, checked strictly without a dependency (email-validator is not one of
# ours): one `@`; a local part of 1-64 printable non-space characters without `@`; a domain of
# dot-separated labels (letters, digits, inner hyphens; 1-63 each), at least two, the last
# alphabetic. Stripe refuses what this refuses, so a bad address fails here, named, rather
# than as a reconcile Stripe rejects.
EMAIL_PATTERN: Final[str] = (
    r"^[!-?A-~]{1,64}@(?=.{1,255}$)"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_EMAIL: Final = re.compile(EMAIL_PATTERN)


def no_nul(value: str) -> str:
    """PostgreSQL cannot store a NUL character; Stripe would not show one."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def check_email(value: str) -> str:
    no_nul(value)
    if not _EMAIL.fullmatch(value) or value.count("@") != 1:
        raise ValueError("not an email address (expected name@example.com)")
    return value


def check_country(value: str) -> str:
    """An ISO 3166-1 alpha-2 code, in either case; upper-cased."""
    code = value.upper()
    if code not in COUNTRIES:
        raise ValueError(
            f"unknown country {value!r}: expected a two-letter ISO 3166-1 alpha-2 code "
            "(DE, US, GB, ...)"
        )
    return code


def check_tax_id_type(value: str) -> str:
    """One of Stripe's tax id types; the error suggests the closest one."""
    if value in TAX_ID_TYPES:
        return value
    message = f"unknown tax id type {value!r}"
    close = difflib.get_close_matches(value.lower(), sorted(TAX_ID_TYPES), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean '{close[0]}'?"
    else:
        message += " (Stripe's tax id types look like eu_vat, gb_vat, us_ein)"
    raise ValueError(message)


def check_tax_id_value(value: str) -> str:
    no_nul(value)
    if not value.strip():
        raise ValueError("a tax id value must not be blank")
    return value


def not_only_dots(value: str) -> str:
    """An id that is not only dots: `.` and `..` are path segments every HTTP client removes
    (RFC 3986 §5.2.4), so a resource under such an id could not be reached again."""
    if not value.strip("."):
        raise ValueError("must not be only dots ('.' and '..' are path segments clients remove)")
    return value


def not_blank(value: str) -> str:
    """A text that is not empty nor only whitespace (nor holds a NUL)."""
    no_nul(value)
    if not value.strip():
        raise ValueError("must not be blank (only whitespace)")
    return value


Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME), AfterValidator(not_blank)]
"""A customer's name (Stripe: up to 256 characters)."""
Email = Annotated[
    StrictStr,
    Field(max_length=MAX_EMAIL),
    AfterValidator(check_email),
    WithJsonSchema({"type": "string", "maxLength": MAX_EMAIL, "pattern": EMAIL_PATTERN}),
]
"""An email address (`name@example.com`)."""
Phone = Annotated[StrictStr, Field(min_length=1, max_length=MAX_PHONE), AfterValidator(not_blank)]
"""A phone number (Stripe: up to 20 characters)."""
AddressPart = Annotated[StrictStr, Field(max_length=MAX_ADDRESS_PART), AfterValidator(no_nul)]
Country = Annotated[
    StrictStr,
    AfterValidator(check_country),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]{2}$"}),
]
"""A two-letter country code (ISO 3166-1 alpha-2), in either case; stored upper-case."""
TaxIdType = Annotated[
    StrictStr,
    AfterValidator(check_tax_id_type),
    WithJsonSchema({"type": "string", "enum": sorted(TAX_ID_TYPES)}),
]
"""One of Stripe's tax id types (`eu_vat`, `gb_vat`, `us_ein`, ...)."""
TaxIdValue = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_TAX_ID_VALUE), AfterValidator(check_tax_id_value)
]
CreditMin = Annotated[StrictInt, Field(ge=INT64_MIN, le=0)]
"""The minimum credit balance: 0, or negative to allow an overdraft of that many credits."""
DueInDays = Annotated[StrictInt, Field(ge=0, le=MAX_DUE_IN_DAYS)]
"""Days a customer has to pay an invoice (0-365)."""


def unique_tax_ids(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A wrap validator of a list of tax ids (models with `type` and `value`): the same type
    and value twice is refused at the second one's index (`tax_ids[1]`), as Stripe keeps one
    and the account would list a tax id Stripe does not have."""
    items = handler(value)
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        key = (item.type, item.value)
        if key in seen:
            error = PydanticCustomError(
                "duplicate_tax_id",
                "the same tax id as tax_ids[{first}] ({type} {value}): list each tax id once",
                {"first": seen[key], "type": key[0], "value": key[1]},
            )
            raise ValidationError.from_exception_data(
                "tax_ids", [InitErrorDetails(type=error, loc=(index,), input=item)]
            )
        seen[key] = index
    return items


def check_metadata_key(key: str) -> None:
    """A metadata key Stripe takes: 1-40 characters, no square brackets (form encoding's
    nesting), no NUL."""
    if not key:
        raise ValueError("a metadata key must not be empty")
    if len(key) > MAX_METADATA_KEY:
        raise ValueError(
            f"metadata key {key[:MAX_METADATA_KEY]!r}...: at most {MAX_METADATA_KEY} characters"
        )
    if "[" in key or "]" in key:
        raise ValueError(f"metadata key {key!r}: must not contain '[' or ']'")
    no_nul(key)


def check_metadata(value: dict[str, str]) -> dict[str, str]:
    """Metadata of an org: keys as `check_metadata_key`, values up to 500 characters, at most
    50 keys (Stripe's limits)."""
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys (got {len(value)})")
    for key, item in value.items():
        check_metadata_key(key)
        no_nul(item)
        if len(item) > MAX_METADATA_VALUE:
            raise ValueError(f"metadata value of {key!r}: at most {MAX_METADATA_VALUE} characters")
    return value


def check_account_metadata(value: dict[str, str]) -> dict[str, str]:
    """Metadata of a billing account, pushed to its Stripe customer: `check_metadata`'s rules,
    no key the controller writes itself (a marker key of DESIGN §14, any `br_` key,
    `auto_created`), and room left for those within Stripe's 50 (`ACCOUNT_METADATA_KEYS`)."""
    ours = ", ".join(sorted(CUSTOMER_MARKER_KEYS | CONTROLLER_METADATA_KEYS))
    for key in value:
        if is_reserved_metadata_key(key) or key in CONTROLLER_METADATA_KEYS:
            raise ValueError(
                f"metadata key {key!r} is reserved: {ours} and any br_ key are written by the "
                "controller"
            )
    if len(value) > ACCOUNT_METADATA_KEYS:
        raise ValueError(
            f"at most {ACCOUNT_METADATA_KEYS} keys (got {len(value)}): Stripe takes "
            f"{MAX_METADATA_KEYS}, and the controller writes "
            f"{MAX_METADATA_KEYS - ACCOUNT_METADATA_KEYS} itself ({ours})"
        )
    return check_metadata(value)


MetadataMap = Annotated[
    dict[StrictStr, StrictStr],
    AfterValidator(check_metadata),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY},
            "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
        }
    ),
]
"""An org's metadata (Stripe's limits: 50 keys of 1-40 characters, values up to 500)."""
AccountMetadata = Annotated[
    dict[StrictStr, StrictStr],
    AfterValidator(check_account_metadata),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": ACCOUNT_METADATA_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY},
            "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
        }
    ),
]
"""A billing account's metadata: `check_account_metadata`."""


def field_path(loc: Sequence[str | int]) -> str:
    """`("tax_ids", 0, "type")` as `tax_ids[0].type`; `()` as `""`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_STRIPE_TAX_ID = re.compile(r"^tax_id_data\[(\d+)\]\[(\w+)\]$")
_STRIPE_NESTED = re.compile(r"\[(\w+)\]")


def stripe_field_path(param: str, *, tax_id_index: int | None = None) -> str:
    """Stripe's name of a refused parameter as our field's path: `tax_id_data[1][type]` is
    `tax_ids[1].type`, `address[line1]` is `address.line1`; a tax id endpoint's own `type`
    or `value` is `tax_ids[<tax_id_index>].type` when the index is known."""
    found = _STRIPE_TAX_ID.fullmatch(param)
    if found:
        return f"tax_ids[{found.group(1)}].{found.group(2)}"
    if tax_id_index is not None and param in ("type", "value"):
        return f"tax_ids[{tax_id_index}].{param}"
    head, _, rest = param.partition("[")
    if not rest:
        return param
    parts: list[str | int] = [head]
    for name in _STRIPE_NESTED.findall("[" + rest):
        parts.append(int(name) if name.isdigit() else name)
    return field_path(parts)
