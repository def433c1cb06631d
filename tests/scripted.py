"""A scripted ASGI server for in-process edge-case tests.

Like hypercorn and daphne, its ``receive`` hands each message to exactly one caller. Like every
server measured, it also reports ``http.disconnect`` once the response is complete, and (as
hypercorn on trio does) before the final ``send`` even returns.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
from starlette.types import Message, Scope


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    spec_version: str = "2.3",
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"secret=1",
        "root_path": "",
        "headers": headers or [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


class ScriptedServer:
    def __init__(self) -> None:
        self._queue: deque[Message] = deque()
        self._pushed = anyio.Event()
        self.sent: list[Message] = []
        self.receive_calls = 0
        #: Set at the first call of receive().
        self.read = anyio.Event()
        self.response_complete = anyio.Event()

    def push(self, message: Message) -> None:
        self._queue.append(message)
        self._pushed.set()
        self._pushed = anyio.Event()

    def push_body(self, body: bytes, more_body: bool = False) -> None:
        self.push({"type": "http.request", "body": body, "more_body": more_body})

    def disconnect(self) -> None:
        self.push({"type": "http.disconnect"})

    async def receive(self) -> Message:
        self.receive_calls += 1
        self.read.set()
        while not self._queue:
            await self._pushed.wait()
        return self._queue.popleft()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.disconnect()  # reported before this send returns
            self.response_complete.set()
        self.sent.append(message)

    def status(self) -> Any:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
