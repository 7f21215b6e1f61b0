"""The ASGI application: `/v1/*` through the pipeline, `/_emulator/*` to the operator API.

Plain ASGI rather than a framework router: Stripe's paths are routed by `routing.Router`,
and a fault must be able to drop the connection after a write commits, which needs the raw
`send` channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from stripe_emulator.control_api import OperatorApi
from stripe_emulator.core import Emulator
from stripe_emulator.pipeline import ApiRequest, ApiResponse, Pipeline
from stripe_emulator.resources import build_router

Scope = dict[str, Any]
Message = dict[str, Any]

logger = logging.getLogger("stripe_emulator")


class EmulatorApp:
    """ASGI callable serving one `Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.router = build_router(emulator)
        self.pipeline = Pipeline(emulator, self.router)
        self.operator = OperatorApi(emulator)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = ApiRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            wait_disconnect=lambda: _wait_disconnect(receive),
        )
        if request.path.startswith("/_emulator/"):
            response = self.operator.handle(request)
        else:
            response = await self.pipeline.handle(request)
        if response.drop:
            await _drop(send)
            return
        await _send(send, response)


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send(send: Any, response: ApiResponse) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(response.body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in response.headers.items()),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _drop(send: Any) -> None:
    # ASGI has no "reset the connection" message. uvicorn's `send` is a bound method of the
    # connection's cycle object, which holds the transport: abort it so the client sees the
    # connection die with no response, exactly the case idempotency keys exist for.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        logger.warning("cannot drop the connection with this server; answering 500")
        await _send(send, ApiResponse(500, json.dumps({"error": {"type": "api_error"}}).encode()))
        return
    transport.abort()
    # Let the server notice the disconnect so it does not try to answer with a 500.
    await asyncio.sleep(0)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
