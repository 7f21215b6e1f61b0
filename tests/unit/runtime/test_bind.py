"""`runtime.service.bind`: a busy port fails fast, unless every process asks to share it
(`serve --reuse-port`), and then the kernel spreads the connections over them."""

from __future__ import annotations

import socket

import pytest

from billing_reconciler.runtime.service import bind


def test_a_busy_port_fails_unless_both_share_it() -> None:
    first = bind("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(OSError, match="in use"):
            bind("127.0.0.1", port)
        with pytest.raises(OSError, match="in use"):
            bind("127.0.0.1", port, reuse_port=True)  # the first did not offer to share
    finally:
        first.close()
    shared = [bind("127.0.0.1", 0, reuse_port=True)]
    port = shared[0].getsockname()[1]
    try:
        shared.append(bind("127.0.0.1", port, reuse_port=True))
        # Connections reach both listeners (the kernel hashes each to one of them).
        accepted = {0: 0, 1: 0}
        clients = []
        for _ in range(64):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(client)
        for index, listener in enumerate(shared):
            listener.setblocking(False)
            while True:
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    break
                connection.close()
                accepted[index] += 1
        for client in clients:
            client.close()
        assert sum(accepted.values()) == 64
        assert accepted[0] > 0, accepted
        assert accepted[1] > 0, accepted
    finally:
        for listener in shared:
            listener.close()
