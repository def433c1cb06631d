"""The chaos client: a seeded plan of requests, run over raw asyncio sockets.

Every step is one request with its own id, and one way for its client to behave. What the server
must make of it (``expect``):

- ``complete``: the client read the whole response, so the response was complete before it
  left: the token must never trip.
- ``trip``: the client left before the response could complete: the token must trip (if the
  request reached the app at all; one the client abandoned before the server read it never did).
- ``either``: the client left while the last bytes were being sent. The server's records say
  whether the final send came first; the run checks that the token agrees with them.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.raw_http import request_bytes

#: Kind -> weight in the mix.
MIX: dict[str, int] = {
    "complete": 30,
    "complete-close": 10,
    "before-start": 10,
    "mid-upload": 10,
    "after-upload": 10,
    "mid-stream": 10,
    "reset": 10,
    "last-bytes": 10,
}
#: The size of the single-send body whose client closes while reading it.
BIG_BODY = 256 * 1024
STEP_TIMEOUT = 60.0
#: A pooled connection is reused only if it has been idle for less than this: well within the
#: servers' keep-alive timeout (5 s), so that the server never closes one as it is being reused.
REUSE_SECONDS = 1.0
CONTROL_TIMEOUT = 90.0
#: Tails after the last chunk of a finite stream: the window a closing client may hit.
TAILS = (0.0, 0.0005, 0.001, 0.002, 0.005)


@dataclass
class Step:
    rid: str
    kind: str
    expect: str
    method: str
    path: str
    #: Bytes of the request body that the client sends (``length`` is what it announces).
    body: bytes = b""
    length: int = 0
    #: How the client ends it: "read" (the whole response), "chunks" (that many chunks of a
    #: stream), "until-end" (a stream up to its last data chunk), "partial" (``chunks`` bytes of
    #: the body), "none" (nothing).
    read: str = "read"
    chunks: int = 0
    wait_started: bool = False
    reset: bool = False
    reuse: bool = False
    keep: bool = False


@dataclass
class Outcome:
    step: Step
    error: str | None = None
    #: The server confirmed (long-poll) that the endpoint was running before the client left.
    confirmed_started: bool = False


def plan(seed: int, count: int, prefix: str) -> list[Step]:
    """``count`` steps drawn from ``MIX`` with ``random.Random(seed)``: the same seed, the same
    plan (what each client does; not the interleaving, which the scheduler decides)."""
    rng = random.Random(seed)
    kinds = list(MIX)
    weights = list(MIX.values())
    return [
        _step(rng, f"{prefix}{index:05d}", rng.choices(kinds, weights)[0]) for index in range(count)
    ]


def _stream_path(rng: random.Random, rid: str, chunks: int, tail: float = 0.0) -> str:
    route = rng.choice(("stream", "stream-sync"))
    return f"/c/{route}/{rid}?chunks={chunks}&tail={tail}"


def _leave(rng: random.Random, rid: str, kind: str) -> Step:
    """A client that leaves before the response completes, in the way ``kind`` names."""
    if kind == "before-start":
        return Step(
            rid, kind, "trip", "GET", f"/c/hold/{rid}", read="none", wait_started=rng.random() < 0.5
        )
    if kind == "mid-upload":
        length = rng.randint(1024, 512 * 1024)
        body = rng.randbytes(rng.randint(1, length - 1))
        return Step(rid, kind, "trip", "POST", f"/c/upload/{rid}", body, length, read="none")
    if kind == "after-upload":
        body = rng.randbytes(rng.randint(1, 64 * 1024))
        return Step(
            rid,
            kind,
            "trip",
            "POST",
            f"/c/upload/{rid}?hold=true",
            body,
            len(body),
            read="none",
            wait_started=rng.random() < 0.5,
        )
    # mid-stream
    chunks = rng.randint(1, 5)
    return Step(rid, kind, "trip", "GET", _stream_path(rng, rid, 0), read="chunks", chunks=chunks)


def _step(rng: random.Random, rid: str, kind: str) -> Step:
    if kind == "complete":
        if rng.random() < 0.3:
            path = f"/c/quick-sync/{rid}"
        else:
            path = f"/c/quick/{rid}?wait={rng.choice((0.0, 0.0, 0.001, 0.003))}"
        return Step(
            rid, kind, "complete", "GET", path, reuse=rng.random() < 0.5, keep=rng.random() < 0.5
        )
    if kind == "complete-close":
        path = rng.choice(
            (f"/c/quick/{rid}", f"/c/big/{rid}", _stream_path(rng, rid, rng.randint(1, 3)))
        )
        return Step(rid, kind, "complete", "GET", path, reset=rng.random() < 0.5)
    if kind == "reset":
        step = _leave(rng, rid, rng.choice(("before-start", "mid-upload", "mid-stream")))
        step.kind, step.reset = kind, True
        return step
    if kind == "last-bytes":
        reset = rng.random() < 0.5
        if rng.random() < 0.5:
            # One body message: sent (and the response complete) before any of it is read.
            return Step(
                rid,
                kind,
                "complete",
                "GET",
                f"/c/big/{rid}",
                read="partial",
                chunks=rng.randint(1, BIG_BODY - 1),
                reset=reset,
            )
        path = _stream_path(rng, rid, rng.randint(1, 3), rng.choice(TAILS))
        return Step(rid, kind, "either", "GET", path, read="until-end", reset=reset)
    return _leave(rng, rid, kind)


class Connection:
    """One client connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def chunk(self) -> bytes:
        """One chunk of a chunked body; ``b""`` for the last (and its trailing CRLF)."""
        size = int((await self.reader.readline()).split(b";")[0], 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await self.reader.readexactly(int(headers["content-length"]))
        parts = []
        while chunk := await self.chunk():
            parts.append(chunk)
        return b"".join(parts)

    def close(self, reset: bool = False) -> None:
        if reset:
            # SO_LINGER with a zero timeout: closing sends RST instead of FIN.
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        else:
            self.writer.close()


async def control(port: int, path: str) -> Any:
    """GET a control endpoint on a connection of its own, and return its JSON."""
    conn = await Connection.open(port)
    try:
        await conn.send(request_bytes(path))
        status, headers = await conn.head()
        body = await conn.body(headers)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {body!r}")
        return json.loads(body)
    finally:
        conn.close()


@dataclass
class Client:
    port: int
    #: Idle keep-alive connections, with the time each became idle.
    pool: list[tuple[Connection, float]] = field(default_factory=list)

    async def run(
        self,
        steps: list[Step],
        concurrency: int,
        every: int = 0,
        callback: Callable[[], Awaitable[None]] | None = None,
    ) -> list[Outcome]:
        """Run ``steps`` with ``concurrency`` clients at once; every ``every`` steps done, await
        ``callback()`` (the run drains the server's records with it)."""
        queue = iter(steps)
        outcomes: list[Outcome] = []

        async def worker() -> None:
            for step in queue:
                outcomes.append(await self.step(step))
                if every and callback is not None and len(outcomes) % every == 0:
                    await callback()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        while self.pool:
            self.pool.pop()[0].close()
        return outcomes

    async def _connection(self, reuse: bool) -> Connection:
        while reuse and self.pool:
            conn, idle_since = self.pool.pop()
            if time.monotonic() - idle_since < REUSE_SECONDS:
                return conn
            conn.close()
        return await Connection.open(self.port)

    async def step(self, step: Step) -> Outcome:
        outcome = Outcome(step)
        try:
            await asyncio.wait_for(self._step(step, outcome), STEP_TIMEOUT)
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome

    async def _step(self, step: Step, outcome: Outcome) -> None:
        conn = await self._connection(step.reuse)
        keep = False
        try:
            await conn.send(
                request_bytes(step.path, step.method, step.body, length=step.length or None)
            )
            if step.wait_started:
                answer = await control(self.port, f"/_ctl/await/{step.rid}")
                outcome.confirmed_started = bool(answer["started"])
                if not outcome.confirmed_started:
                    raise RuntimeError("the endpoint never started")
            if step.read == "none":
                return
            status, headers = await conn.head()
            if status != 200:
                raise RuntimeError(f"status {status}")
            if step.read == "chunks":
                for _ in range(step.chunks):
                    await conn.chunk()
            elif step.read == "until-end":
                while await conn.chunk() != b"end\n":
                    pass
            elif step.read == "partial":
                await conn.reader.readexactly(step.chunks)
            else:
                body = await conn.body(headers)
                if step.rid.encode() not in body:
                    raise RuntimeError(f"another request's response: {body[:80]!r}")
                keep = step.keep
        finally:
            if keep:
                self.pool.append((conn, time.monotonic()))
            else:
                conn.close(step.reset)
