"""Preemptive mode: the endpoint is cancelled at its next await when the client leaves.

In process, with the scripted server (the client leaves by ``http.disconnect``), on both
backends. Against real servers: tests/servers/test_features.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import anyio.from_thread
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette

from fastapi_abort import RequestAborted, install, preemptive
from fastapi_abort._install import PREEMPTIVE_NEEDS_FASTAPI, PREEMPTIVE_TOO_LATE
from tests.scripted import ScriptedServer, http_scope
from tests.support import WAIT, quiet_lines

pytestmark = pytest.mark.anyio


async def leave_when(app: FastAPI, path: str, started: anyio.Event) -> ScriptedServer:
    """Serve one GET of ``path``; the client leaves once ``started`` is set."""
    server = ScriptedServer()
    server.push_body(b"")
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, http_scope(path), server.receive, server.send)
            await started.wait()
            server.disconnect()
    return server


@pytest.fixture
def app(caplog: pytest.LogCaptureFixture) -> FastAPI:
    """An installed app, with the quiet lines captured."""
    caplog.set_level(logging.INFO, "fastapi_abort")
    app = FastAPI()
    install(app)
    return app


async def test_a_preemptive_endpoint_is_cancelled_at_its_await_and_cleans_up(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def outer_resource() -> AsyncIterator[None]:
        # Before `preemptive`: its cleanup runs outside the cancellation, so it may await.
        try:
            yield
        finally:
            await anyio.sleep(0)
            steps.append("outer cleanup awaited")

    async def inner_resource() -> AsyncIterator[None]:
        try:
            yield
        finally:
            steps.append("inner cleanup")

    @app.get(
        "/draw",
        dependencies=[Depends(outer_resource), Depends(preemptive), Depends(inner_resource)],
    )
    async def draw() -> str:
        try:
            started.set()
            await anyio.sleep(WAIT)  # never checks a token
            steps.append("endpoint finished")  # pragma: no cover
        finally:
            steps.append("endpoint finally")
        return "drawn"  # pragma: no cover

    server = await leave_when(app, "/draw", started)
    assert steps == ["endpoint finally", "inner cleanup", "outer cleanup awaited"]
    assert server.status() == 499
    assert len(quiet_lines(caplog)) == 1
    assert all(r.levelno <= logging.INFO for r in caplog.records)


async def test_install_preemptive_makes_every_route_preemptive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fastapi_abort")
    app = FastAPI()
    install(app, preemptive=True)
    started = anyio.Event()
    cancelled: list[bool] = []

    @app.get("/slow")
    async def slow() -> str:
        started.set()
        try:
            await anyio.sleep(WAIT)
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise
        return "done"  # pragma: no cover

    server = await leave_when(app, "/slow", started)
    assert cancelled == [True]
    assert server.status() == 499
    assert len(quiet_lines(caplog)) == 1


async def test_a_cooperative_endpoint_runs_on_after_the_client_left(app: FastAPI) -> None:
    # The default: nothing is cancelled behind the endpoint's back.
    started = anyio.Event()
    left = anyio.Event()

    @app.get("/coop")
    async def coop(ct: RequestAborted) -> str:
        ct.register(left.set)
        started.set()
        await left.wait()
        await anyio.sleep(0)  # an await after the client left: not cancelled
        return "finished anyway"

    server = await leave_when(app, "/coop", started)
    assert server.status() == 200


async def test_a_preemptive_def_endpoint_runs_to_its_end_then_ends_quietly(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    @app.get("/sync", dependencies=[Depends(preemptive)])
    def sync(ct: RequestAborted) -> str:
        anyio.from_thread.run_sync(started.set)
        # A worker thread cannot be interrupted: it stops when it checks the token.
        assert ct.wait_blocking(WAIT)
        steps.append("thread saw the token")
        return "late"

    server = await leave_when(app, "/sync", started)
    assert steps == ["thread saw the token"]
    assert server.status() == 499
    assert len(quiet_lines(caplog)) == 1


async def test_a_preemptive_streaming_body_is_cancelled_mid_stream(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    @app.get("/stream", dependencies=[Depends(preemptive)])
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield b"first"
                started.set()
                await anyio.sleep(WAIT)
                yield b"never"  # pragma: no cover
            finally:
                steps.append("body finally")

        return StreamingResponse(chunks())

    server = await leave_when(app, "/stream", started)
    assert steps == ["body finally"]
    assert server.status() == 200
    assert server.body() == b"first"
    assert len(quiet_lines(caplog)) == 1


def test_install_preemptive_refuses_an_app_with_routes_already() -> None:
    app = FastAPI()

    @app.get("/early")
    async def early() -> None:  # pragma: no cover - never called
        pass

    with pytest.raises(RuntimeError) as caught:
        install(app, preemptive=True)
    assert str(caught.value) == PREEMPTIVE_TOO_LATE.format(count=1)


def test_install_preemptive_needs_a_fastapi_app() -> None:
    with pytest.raises(TypeError) as caught:
        install(Starlette(), preemptive=True)
    assert str(caught.value) == PREEMPTIVE_NEEDS_FASTAPI.format(type="Starlette")


def test_preemptive_adds_nothing_to_the_openapi_schema() -> None:
    app = FastAPI()
    install(app, preemptive=True)

    @app.get("/x")
    async def x() -> None:  # pragma: no cover - never called
        pass

    operation = app.openapi()["paths"]["/x"]["get"]
    assert "parameters" not in operation
    assert "requestBody" not in operation
