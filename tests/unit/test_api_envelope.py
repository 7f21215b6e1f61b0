"""No error answer of the API can fail to encode (tester T1 F1): whatever an error's details
hold (an echoed id with a lone surrogate, an object JSON cannot spell), and even when
building the answer raises, the client gets the `{"error": ...}` envelope, never
Starlette's plain-text 500."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from billing_reconciler.api.errors import FALLBACK_BODY, ApiError, EnvelopeResponse, printable
from billing_reconciler.api.routing import ApiRoute


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


class _Unanswerable(ApiError):
    def response(self) -> JSONResponse:
        raise RuntimeError("answer building failed")


def _client(error: Exception) -> TestClient:
    router = APIRouter(route_class=ApiRoute)

    @router.get("/x")
    def route() -> None:
        raise error

    app = FastAPI()
    app.include_router(router)
    return TestClient(app, raise_server_exceptions=True)


def _envelope(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.content)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    return error


def test_a_detail_with_a_lone_surrogate_is_answered_spelled_out() -> None:
    error = ApiError(422, "invalid_argument", "bad \ud800", {"usage_id": "u\ud800", "n": 1})
    response = _client(error).get("/x")
    assert response.status_code == 422
    answer = _envelope(response)
    assert answer["message"] == "bad \\ud800"
    assert answer["details"] == {"usage_id": "u\\ud800", "n": 1}


def test_details_json_cannot_spell_are_answered_as_text() -> None:
    details = {"at": {1, 2}, "ratio": float("nan"), "thing": ValueError("x"), 3: (1, "\udfff")}
    response = _client(ApiError(409, "failed_precondition", "m", details)).get("/x")
    assert response.status_code == 409
    assert _envelope(response)["details"] == {
        "at": [1, 2],
        "ratio": "nan",
        "thing": "x",
        "3": [1, "\\udfff"],
    }


def test_an_answer_that_cannot_be_built_is_the_503_envelope() -> None:
    response = _client(_Unanswerable(422, "invalid_argument", "m")).get("/x")
    assert response.status_code == 503
    assert _envelope(response)["code"] == "provider_unavailable"


def test_content_even_printable_cannot_spell_falls_back() -> None:
    response = EnvelopeResponse({"error": {"details": _Unprintable()}}, status_code=422)
    assert response.status_code == 503
    assert response.body == FALLBACK_BODY
    assert json.loads(FALLBACK_BODY)["error"]["code"] == "provider_unavailable"


def test_printable_keeps_text_as_it_is() -> None:
    value = {"k": ["é", "\U0001f600", 1, None, True, 2.5]}
    assert printable(value) == value
