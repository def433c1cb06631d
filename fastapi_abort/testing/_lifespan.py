"""The app's lifespan, driven as uvicorn's ``lifespan="auto"`` does, in a task of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message

LIFESPAN_TIMED_OUT = (
    "The app's lifespan {phase} did not finish within {timeout:g} s. Pass lifespan=False to "
    "AbortingClient if the app does not run a lifespan."
)
NOT_LIFESPAN = "Expected an ASGI lifespan message, but got '{type}'."
# What a lifespan may send (uvicorn's lifespan/on.py asserts the same).
_LIFESPAN_MESSAGES = frozenset(
    {
        "lifespan.startup.complete",
        "lifespan.startup.failed",
        "lifespan.shutdown.complete",
        "lifespan.shutdown.failed",
    }
)
LIFESPAN_FAILED = "The app's lifespan {phase} failed: {message}"


class _Lifespan:
    """uvicorn's ``lifespan="auto"``: an app that raises before answering has no lifespan."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": state,
        }
        self._asked = False
        self.shutdown = anyio.Event()
        self.started = anyio.Event()
        self.stopped = anyio.Event()
        self.answered = False
        self.failure: str | None = None
        self.exception: Exception | None = None
        self._task_group = anyio.create_task_group()

    async def start(self, app: ASGIApp) -> None:
        """Call the app with the lifespan scope, in a task of its own."""
        await self._task_group.__aenter__()
        self._task_group.start_soon(self.run, app)

    async def stop(self) -> None:
        """Cancel the app's lifespan task, and wait for it."""
        # The lifespan task keeps what the app raises: the task group has nothing to raise.
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception as exc:
            if self.answered:
                self.exception = exc
        finally:
            self.started.set()
            self.stopped.set()

    async def receive(self) -> Message:
        if not self._asked:
            self._asked = True
            return {"type": "lifespan.startup"}
        await self.shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind not in _LIFESPAN_MESSAGES:
            raise RuntimeError(NOT_LIFESPAN.format(type=kind))
        self.answered = True
        if kind.endswith(".failed"):
            self.failure = message.get("message", "")
        if kind.startswith("lifespan.startup."):
            self.started.set()
        else:
            self.stopped.set()

    async def wait(self, done: anyio.Event, phase: str, seconds: float) -> None:
        """Wait for ``done`` (:attr:`started` or :attr:`stopped`), then raise what went wrong.

        :raises TimeoutError: if ``done`` was not set within ``seconds``.
        :raises Exception: what the app raised after it answered, or a :class:`RuntimeError`
            for a ``lifespan.*.failed`` it sent.
        """
        with anyio.move_on_after(seconds) as bound:
            await done.wait()
        if bound.cancelled_caught:
            raise TimeoutError(LIFESPAN_TIMED_OUT.format(phase=phase, timeout=seconds))
        self.check(phase)

    def check(self, phase: str) -> None:
        if self.exception is not None:
            raise self.exception
        if self.failure is not None:
            raise RuntimeError(LIFESPAN_FAILED.format(phase=phase, message=self.failure))
