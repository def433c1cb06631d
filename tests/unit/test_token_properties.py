"""Property-based tests of the token under concurrency (hypothesis, stateful).

A state machine creates sources (linked to earlier ones or not), registers callbacks (some of
which act on the same or other tokens from inside the callback: cancel, register, unregister,
close), unregisters them, cancels with reasons, sets deadlines (0, a few milliseconds, or far
away), closes sources and starts waiters (``wait()``, ``sleep()`` and ``scope()`` in tasks on an
asyncio or trio loop, ``wait_blocking()`` in threads). Each step runs in the test's thread, in a
worker thread or on the loop thread. After every step the real tokens must match a model that
follows the documented rules:

* a callback runs exactly once when its token is cancelled, in registration order, before
  ``cancel()`` returns; never once ``unregister()`` returned ``True``; at once if the token was
  already cancelled; never if the token was closed first;
* ``unregister()`` returns ``True`` exactly when the callback was still registered: it then never
  runs. ``False`` means the token's cancellation already took it (it ran, or runs during the
  cancellation in progress, exactly once), or the token was closed first, or the registration was
  already undone or was made on a cancelled or closed token (it then ran at once, or never);
* a linked token is cancelled when a parent is (with the parent's reason and origin) unless it was
  closed first; ``reason`` and ``_origin`` follow the first cancellation and never change;
* ``close()`` is final: a token closed before it was cancelled can never be cancelled;
* waiters wake when their token is cancelled, and only then.

A race step runs several operations at once on real threads released by a barrier; its outcome
is checked against invariants that hold in any order (the model then adopts the real state). Every
wait is bounded, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenRegistration,
    CancellationTokenSource,
    OperationCancelled,
)
from tests.support import CI, WAIT

DEADLINE = CancellationReason.DEADLINE
#: A deadline that never passes during a test.
FAR = 1000.0

# CI runs more examples; a local run stays quick. Both keep the file well under a minute on a
# loaded 2-core machine. No example database: nothing is written into the working tree.
# No explain phase: it traces the test thread with sys.settrace while the failing example
# replays, and a Thread.start() under that tracer was seen to hang (hypothesis 6.170, 3.11).
# No shrink phase: a race step adopts whatever order the threads ran in, so a replay of a failing
# example may take another path; shrinking then ends in "Flaky" (inconsistent data generation)
# instead of the failure, after running past the test's timeout. The unshrunk steps are shown.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
for name, examples, steps in (("ci", 200, 40), ("dev", 50, 30)):
    settings.register_profile(
        f"fastapi-abort-token-{name}",
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
        phases=PHASES,
    )
PROFILE = settings.get_profile("fastapi-abort-token-ci" if CI else "fastapi-abort-token-dev")

DEADLOCK = "{what} did not happen within {wait} s: a deadlock, or a wake-up that never came"
MODEL_MISMATCH = "the tokens never reached the state the model predicts: {diff}"


class Reason:
    """A reason of the test's own; compared by identity, as the token does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Reason({self.name})"


REASONS = tuple(Reason(name) for name in "abc")

# Once one bounded wait has run out, the test has failed: hypothesis then replays and shrinks the
# failing example, and waits of the full bound would make that take many minutes.
_timed_out: list[bool] = []


def bound() -> float:
    """The bound on the next wait, in seconds."""
    return 1.0 if _timed_out else WAIT


def within(wait: Callable[[float], object], what: str) -> None:
    """Call ``wait(bound())``, which returns true once what it waits for happened."""
    seconds = bound()
    if not wait(seconds):
        _timed_out.append(True)
        raise AssertionError(DEADLOCK.format(what=what, wait=seconds))


def joined(thread: threading.Thread) -> Callable[[float], bool]:
    def join(seconds: float) -> bool:
        thread.join(seconds)
        return not thread.is_alive()

    return join


def resolved(future: Future[Any]) -> Callable[[float], bool]:
    def wait(seconds: float) -> bool:
        return not concurrent.futures.wait([future], seconds).not_done

    return wait


# -- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Act:
    """What a callback does when it runs: ``kind`` on token ``target`` (or registration key)."""

    kind: str  # "none", "cancel", "register", "unregister", "close"
    target: int = 0
    reason: Reason = REASONS[0]


NOTHING = Act("none")


@dataclass
class ModelToken:
    parents: tuple[int, ...] = ()
    reason: object = None
    origin: int | None = None
    closed: bool = False
    #: Registered callbacks in order: ("link", child) or ("cb", key). None once cancelled or
    #: closed (the real token drops its dict then too).
    entries: list[tuple[str, int]] | None = field(default_factory=list)
    #: Cancelled by its own source (cancel() or a deadline), not through a link.
    own: bool = False


@dataclass
class Model:
    tokens: list[ModelToken] = field(default_factory=list)
    #: Per callback key: its token, what it does, how often it must have run.
    token_of: dict[int, int] = field(default_factory=dict)
    acts: dict[int, Act] = field(default_factory=dict)
    runs: dict[int, int] = field(default_factory=dict)
    #: Every callback run, in order.
    sequence: list[int] = field(default_factory=list)

    def can_be_cancelled(self, i: int) -> bool:
        t = self.tokens[i]
        return t.reason is not None or not t.closed

    def new(self, parents: tuple[int, ...]) -> int:
        index = len(self.tokens)
        live = tuple(p for p in parents if self.can_be_cancelled(p))
        self.tokens.append(ModelToken(parents=live))
        for p in live:
            entries = self.tokens[p].entries
            if entries is not None:
                entries.append(("link", index))
            else:  # a cancelled parent cancels the child at once
                self.cancel(index, self.tokens[p].reason, self.tokens[p].origin)
        return index

    def cancel(self, i: int, reason: object, origin: int | None, own: bool = False) -> None:
        t = self.tokens[i]
        if t.reason is not None or t.closed:
            return
        t.reason, t.origin, t.own = reason, origin, own
        entries, t.entries = t.entries, None
        for kind, target in entries or []:
            if kind == "link":
                self.cancel(target, reason, origin)
            else:
                self.run(target)

    def run(self, key: int) -> None:
        self.runs[key] += 1
        self.sequence.append(key)
        act = self.acts[key]
        if act.kind == "cancel":
            self.cancel(act.target, act.reason, act.target, own=True)
        elif act.kind == "register":
            # The callback registers a plain callback whose key is its own key + 1 (reserved).
            self.register(act.target, key + 1, NOTHING)
        elif act.kind == "unregister":
            self.unregister(act.target)
        elif act.kind == "close":
            self.close(act.target)

    def register(self, i: int, key: int, act: Act) -> None:
        self.token_of[key], self.acts[key] = i, act
        self.runs.setdefault(key, 0)
        t = self.tokens[i]
        if t.entries is not None:
            t.entries.append(("cb", key))
        elif t.reason is not None:
            self.run(key)

    def unregister(self, key: int) -> bool:
        entries = self.tokens[self.token_of[key]].entries
        if entries is not None and ("cb", key) in entries:
            entries.remove(("cb", key))
            return True
        return False

    def close(self, i: int) -> None:
        t = self.tokens[i]
        t.closed, t.entries = True, None
        parents, t.parents = t.parents, ()
        for p in parents:
            entries = self.tokens[p].entries
            if entries is not None and ("link", i) in entries:
                entries.remove(("link", i))


# -- running steps elsewhere ---------------------------------------------------------------------


@dataclass
class Waiter:
    token: int
    kind: str  # "wait", "sleep", "scope", "blocking"
    done: threading.Event = field(default_factory=threading.Event)
    outcome: object = None
    cancelled_when_woken: bool | None = None
    future: Future[None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


async def _wait_in_task(token: CancellationToken, waiter: Waiter) -> None:
    try:
        if waiter.kind == "wait":
            await token.wait()
            waiter.outcome = "returned"
        elif waiter.kind == "sleep":
            await token.sleep(FAR)
            waiter.outcome = "slept"
        else:
            with token.scope():
                await anyio.sleep_forever()
    except OperationCancelled as exc:
        waiter.outcome = exc
    waiter.cancelled_when_woken = token.is_cancellation_requested
    waiter.done.set()


def _wait_in_thread(token: CancellationToken, waiter: Waiter) -> None:
    # Short blocking waits in a loop, so that the test can stop a waiter whose token is final.
    while not waiter.stop.is_set():
        started = time.monotonic()
        if token.wait_blocking(0.05):
            waiter.outcome = "returned"
            waiter.cancelled_when_woken = token.is_cancellation_requested
            waiter.done.set()
            return
        if time.monotonic() - started < 0.05:
            waiter.outcome = "returned False before its timeout"
            waiter.done.set()
            return


class TokenMachine(RuleBasedStateMachine):
    """Drives real tokens and the model side by side; see the module docstring."""

    backend: ClassVar[str]

    sources = Bundle("sources")
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        self.portal = self.stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-worker")
        self.model = Model()
        self.real: list[CancellationTokenSource] = []
        self.registrations: dict[int, CancellationTokenRegistration] = {}
        self.runs: dict[int, int] = {}
        self.sequence: list[int] = []
        #: The callbacks that a callback unregistered (unregister() returned True).
        self.removed_by_callbacks: set[int] = set()
        self.ran_uncancelled: list[int] = []
        self.runs_lock = threading.Condition()
        self.waiters: list[Waiter] = []
        self.next_key = 0
        self.errors: list[BaseException] = []

    # -- helpers -----------------------------------------------------------------------------

    def on(self, where: str, what: str, func: Callable[[], Any]) -> Any:
        """Run ``func`` here, in the worker thread or on the loop thread; bounded."""
        if where == "here":
            return func()
        if where == "thread":
            future = self.pool.submit(func)
        else:
            future = self.portal.start_task_soon(_call, func)
        within(resolved(future), what)
        return future.result()

    def make_callback(self, key: int, token: CancellationToken) -> Callable[[], None]:
        def callback() -> None:
            with self.runs_lock:
                self.runs[key] = self.runs.get(key, 0) + 1
                self.sequence.append(key)
                if not token.is_cancellation_requested:
                    self.ran_uncancelled.append(key)
                self.runs_lock.notify_all()
            try:
                self.act(key)
            except BaseException as exc:  # pragma: no cover - only when it fails
                self.errors.append(exc)

        return callback

    def act(self, key: int) -> None:
        act = self.model.acts[key]
        if act.kind == "cancel":
            self.real[act.target].cancel(act.reason)
        elif act.kind == "register":
            token = self.real[act.target].token
            self.model.acts.setdefault(key + 1, NOTHING)
            self.registrations[key + 1] = token.register(self.make_callback(key + 1, token))
        elif act.kind == "unregister":
            if self.registrations[act.target].unregister():
                self.removed_by_callbacks.add(act.target)
        elif act.kind == "close":
            self.real[act.target].close()

    def new_key(self) -> int:
        key = self.next_key
        self.next_key += 2  # key + 1 is kept for the callback a "register" act makes
        return key

    def diff(self) -> list[str]:
        """Where the real tokens differ from the model (empty when they agree)."""
        out: list[str] = []
        model = self.model
        for i, (source, m) in enumerate(zip(self.real, model.tokens, strict=True)):
            token = source.token
            if m.reason is not None and token.reason is not None and token.reason is not m.reason:
                out.append(f"token {i}: reason {token.reason!r}, model {m.reason!r}")
            if m.reason is None and token.reason is not None:
                out.append(f"token {i}: cancelled ({token.reason!r}), model not")
            if m.reason is not None and token.reason is None:
                out.append(f"token {i}: not cancelled, model {m.reason!r}")
            origin = None if m.origin is None else self.real[m.origin].token
            if _origin(token) is not origin:
                out.append(f"token {i}: origin {_origin(token)!r}, model token {m.origin}")
            if token.can_be_cancelled != model.can_be_cancelled(i):
                out.append(f"token {i}: can_be_cancelled {token.can_be_cancelled}")
        with self.runs_lock:
            for key, expected in model.runs.items():
                if self.runs.get(key, 0) != expected:
                    out.append(f"callback {key}: ran {self.runs.get(key, 0)}, model {expected}")
            if self.sequence != model.sequence:
                out.append(f"callbacks ran in order {self.sequence}, model {model.sequence}")
        return out

    def settle(self, i: int, timer: object) -> None:
        """Wait (bounded) until a deadline of token ``i`` has cancelled it, and its callbacks are
        done, wherever they run.

        The deadline fires in a timer thread or on the loop, or at the first read of the token
        once it passed (in this thread, or in a waiter reading it or a token linked to it). The
        token's reason is set first: once it is, every thread that may be running its callbacks
        is waited for (the timer thread joined, a round trip made to the loop, the woken thread
        waiters waited for), and then the tokens must match the model with no further wait.
        """
        token = self.real[i].token
        if self.model.tokens[i].reason is not None:
            within(token.wait_blocking, "the deadline")
        if isinstance(timer, threading.Thread):
            within(joined(timer), "the timer thread's end")
        self.on("loop", "a round trip to the loop", lambda: None)
        for waiter in self.waiters:
            if waiter.thread is not None and self.real[waiter.token].token.reason is not None:
                within(waiter.done.wait, "a thread waiter's wake-up")
        assert not self.diff(), MODEL_MISMATCH.format(diff=self.diff())

    # -- rules -------------------------------------------------------------------------------

    @initialize(target=sources, linked=st.booleans())
    def first_sources(self, linked: bool) -> MultipleResults[int]:
        """A root, and a second source linked to it or not."""
        self.real.append(CancellationTokenSource())
        self.real.append(CancellationTokenSource(*([self.real[0].token] if linked else [])))
        return multiple(self.model.new(()), self.model.new((0,) if linked else ()))

    @rule(
        target=sources,
        parents=st.lists(st.integers(0, 7), max_size=3),
        where=st.sampled_from(["here", "thread", "loop"]),
    )
    def new_source(self, parents: list[int], where: str) -> int:
        chosen = tuple(sorted({p % len(self.real) for p in parents})) if self.real else ()
        tokens = [self.real[p].token for p in chosen]
        source = self.on(
            where, "CancellationTokenSource()", lambda: CancellationTokenSource(*tokens)
        )
        self.real.append(source)
        index = self.model.new(chosen)
        assert index == len(self.real) - 1
        return index

    @rule(
        target=keys,
        i=sources,
        kind=st.sampled_from(["none", "none", "cancel", "register", "unregister", "close"]),
        other=st.integers(0, 7),
        reason=st.sampled_from(REASONS),
        where=st.sampled_from(["here", "thread", "loop"]),
    )
    def register(self, i: int, kind: str, other: int, reason: Reason, where: str) -> int:
        key = self.new_key()
        if kind == "unregister":
            earlier = [k for k in self.registrations if k < key]
            target = earlier[other % len(earlier)] if earlier else 0
            act = Act(kind, target) if earlier else NOTHING
        else:
            act = Act(kind, other % len(self.real), reason)
        token = self.real[i].token
        self.model.acts[key] = act  # read by the callback, which may run during register()
        callback = self.make_callback(key, token)
        self.registrations[key] = self.on(where, "register()", lambda: token.register(callback))
        # A callback on a cancelled token runs in register(), before it returns: no settle().
        self.model.register(i, key, act)
        assert not self.diff(), self.diff()
        return key

    @rule(key=keys, where=st.sampled_from(["here", "thread", "loop"]))
    def unregister(self, key: int, where: str) -> None:
        registration = self.registrations[key]
        removed = self.on(where, "unregister()", registration.unregister)
        assert removed == self.model.unregister(key)
        assert not self.diff(), self.diff()

    @rule(
        i=sources,
        reason=st.sampled_from(REASONS),
        where=st.sampled_from(["here", "thread", "loop"]),
    )
    def cancel(self, i: int, reason: Reason, where: str) -> None:
        source = self.real[i]
        self.on(where, "cancel()", lambda: source.cancel(reason))
        self.model.cancel(i, reason, i, own=True)
        assert not self.diff(), self.diff()

    @rule(i=sources, where=st.sampled_from(["here", "thread", "loop"]))
    def close(self, i: int, where: str) -> None:
        self.on(where, "close()", self.real[i].close)
        self.model.close(i)
        assert not self.diff(), self.diff()

    @rule(
        i=sources,
        delay=st.sampled_from([0.0, 0.001, 0.005, FAR]),
        where=st.sampled_from(["here", "thread", "loop"]),
    )
    def cancel_after(self, i: int, delay: float, where: str) -> None:
        source = self.real[i]

        def call() -> object:
            source.cancel_after(delay)
            # The function that stops the timer: a method of the timer thread, or of the loop's
            # timer handle.
            return getattr(source.token._timer, "__self__", None)

        timer = self.on(where, "cancel_after()", call)
        if delay < FAR:
            if not self.model.tokens[i].closed:
                self.model.cancel(i, DEADLINE, i, own=True)
            self.settle(i, timer)
        assert not self.diff(), self.diff()

    @rule(i=sources, kind=st.sampled_from(["wait", "sleep", "scope", "blocking"]))
    def start_waiter(self, i: int, kind: str) -> None:
        token = self.real[i].token
        waiter = Waiter(i, kind)
        if kind == "blocking":
            waiter.thread = threading.Thread(target=_wait_in_thread, args=(token, waiter))
            waiter.thread.start()
        else:
            waiter.future = self.portal.start_task_soon(_wait_in_task, token, waiter)
        self.waiters.append(waiter)

    @precondition(lambda self: len(self.real) > 0)
    @rule(data=st.data())
    def race(self, data: st.DataObject) -> None:
        """Several operations at once, on real threads released together."""
        count = data.draw(st.integers(2, 4), label="threads")
        ops: list[tuple[str, int, Reason]] = []
        for _ in range(count):
            kind = data.draw(st.sampled_from(["cancel", "close", "register", "unregister"]))
            i = data.draw(st.integers(0, len(self.real) - 1))
            ops.append((kind, i, data.draw(st.sampled_from(REASONS))))
        self.run_race(ops)

    def run_race(self, ops: list[tuple[str, int, Reason]]) -> None:
        barrier = threading.Barrier(len(ops))
        # What each unregister() returned: two threads may unregister the same callback, and
        # only one of them gets True (list.append is atomic; a dict keyed by callback would keep
        # whichever returned last).
        unregistered: list[tuple[int, bool]] = []
        new_keys: list[int] = []
        plain = [
            k for k, act in self.model.acts.items() if act is NOTHING and k in self.registrations
        ]
        live = {key for m in self.model.tokens for kind, key in (m.entries or []) if kind == "cb"}
        jobs: list[Callable[[], None]] = []
        for n, (kind, i, reason) in enumerate(ops):
            source = self.real[i]
            if kind == "cancel":
                jobs.append(functools.partial(source.cancel, reason))
            elif kind == "close":
                jobs.append(source.close)
            elif kind == "register" or not plain:
                key = self.new_key()
                new_keys.append(key)
                self.model.acts[key], self.model.token_of[key] = NOTHING, i
                self.model.runs[key] = 0
                callback = self.make_callback(key, source.token)

                def register(
                    key: int = key,
                    token: CancellationToken = source.token,
                    callback: Callable[[], None] = callback,
                ) -> None:
                    self.registrations[key] = token.register(callback)

                jobs.append(register)
            else:
                key = plain[n % len(plain)]

                def unregister(key: int = key) -> None:
                    unregistered.append((key, self.registrations[key].unregister()))

                jobs.append(unregister)

        def run(job: Callable[[], None]) -> None:
            try:
                barrier.wait(WAIT)
                job()
            except BaseException as exc:  # pragma: no cover - only when it fails
                self.errors.append(exc)

        threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            within(joined(thread), "the end of a racing thread")
        assert self.errors == []
        removed: dict[int, bool] = {}
        for key, result in unregistered:
            removed[key] = removed.get(key, False) or result
        assert all(sum(result for k, result in unregistered if k == key) <= 1 for key in removed), (
            f"unregister() returned True more than once: {unregistered}"
        )
        self.adopt(live, removed, new_keys)

    def adopt(self, live: set[int], removed: dict[int, bool], new_keys: list[int]) -> None:
        """Check what holds in any order, then take the real outcome into the model.

        ``live``: the callbacks registered (and not run) before the race; ``removed``: what
        ``unregister()`` returned in it; ``new_keys``: the callbacks registered in it.
        """
        model = self.model
        # A cancellation in progress on another thread (a deadline's timer on the loop thread)
        # may have taken a callback that it has yet to run: unregister() then returned False,
        # and the callback runs once that cancellation gets to it. Wait for it, bounded.
        due = [
            key
            for key in live | set(new_keys)
            if self.real[model.token_of[key]].token.is_cancellation_requested
            and removed.get(key) is not True
            and key not in self.removed_by_callbacks
        ]
        with self.runs_lock:
            ran = self.runs_lock.wait_for(lambda: all(self.runs.get(k) for k in due), WAIT)
        assert ran, f"callbacks {due} of cancelled tokens did not run within {WAIT} s"
        # Callbacks registered by callbacks that ran during the race: add them to the model.
        for key in self.registrations:
            if key not in model.token_of:
                model.token_of[key] = model.acts[key - 1].target
                model.runs[key] = 0
        for i, source in enumerate(self.real):
            token, m = source.token, model.tokens[i]
            if m.reason is not None:  # cancellation is one-way; the first reason stays
                assert token._reason is m.reason, (i, token.reason, m.reason)
            if m.closed and m.reason is None:  # close() is final
                assert token.reason is None, (i, token.reason)
            if token.reason is not None and m.reason is None:
                m.reason = token.reason
                m.origin = self.real.index(_source_of(self.real, _origin(token)))
                m.own = m.origin == i
            m.closed = m.closed or token._closed
            if m.closed:
                m.parents = ()
        # What each token still holds, in the order it holds it (a dict keeps insertion order).
        entry_of: dict[int, tuple[str, int]] = {
            id(registration): ("cb", key) for key, registration in self.registrations.items()
        }
        for j, source in enumerate(self.real):
            entry_of.update((id(link), ("link", j)) for link in source._links)
        for source, m in zip(self.real, model.tokens, strict=True):
            held = source.token._callbacks
            m.entries = (
                None if held is None else [entry_of[id(r)] for r in held if id(r) in entry_of]
            )
        with self.runs_lock:
            for key in model.runs:
                runs = self.runs.get(key, 0)
                assert runs <= 1, f"callback {key} ran {runs} times"
                cancelled = model.tokens[model.token_of[key]].reason is not None
                if removed.get(key) is True or key in self.removed_by_callbacks:
                    assert runs == model.runs[key] == 0, f"callback {key} ran after unregister()"
                elif key in live or key in new_keys:
                    # unregister() False, or not unregistered: it ran once iff its token was
                    # cancelled (a token closed first never runs it).
                    assert runs == int(cancelled), (key, runs, cancelled, removed.get(key))
                model.runs[key] = runs
            model.sequence = list(self.sequence)
        assert not self.diff(), self.diff()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def callbacks_ran_only_on_a_cancelled_token(self) -> None:
        with self.runs_lock:
            assert self.ran_uncancelled == []
            assert all(runs <= 1 for runs in self.runs.values()), self.runs
        assert self.errors == []

    @invariant()
    def linked_tokens_follow_their_parents(self) -> None:
        for i, m in enumerate(self.model.tokens):
            token = self.real[i].token
            if token.reason is not None:
                # The origin's reason is the one passed on, and never changes.
                origin = _origin(token)
                assert origin is not None
                assert origin._reason is token._reason
            if m.closed:
                continue
            parents = [self.real[p].token for p in m.parents]
            expected = m.own or any(p.reason is not None for p in parents)
            assert (token.reason is not None) == expected, (i, token.reason, m)

    @invariant()
    def waiters_wake_for_cancellation_and_only_for_it(self) -> None:
        for waiter in self.waiters:
            source = self.real[waiter.token]
            if source.token.reason is None:
                assert not waiter.done.is_set(), (waiter.kind, waiter.outcome)
                continue
            within(waiter.done.wait, f"the wake-up of a {waiter.kind} waiter")
            assert waiter.cancelled_when_woken is True, (waiter.kind, waiter.outcome)
            if waiter.kind in ("sleep", "scope"):
                exc = waiter.outcome
                assert isinstance(exc, OperationCancelled), exc
                assert exc.token is source.token
                assert exc.reason is source.token.reason
            else:
                assert waiter.outcome == "returned"

    def teardown(self) -> None:
        try:
            for waiter in self.waiters:
                waiter.stop.set()
                if waiter.future is not None:
                    waiter.future.cancel()
            for waiter in self.waiters:
                if waiter.thread is not None:
                    within(joined(waiter.thread), "the end of a thread waiter")
            for source in self.real:
                source.close()  # stops far-away timers
        finally:
            self.pool.shutdown(wait=True)
            self.stack.close()


async def _call(func: Callable[[], Any]) -> Any:
    return func()


def _origin(token: CancellationToken) -> CancellationToken | None:
    """The token that was cancelled first (``_origin`` is None when it is the token itself), or
    None while the token is not cancelled."""
    if token.reason is None:
        return None
    return token._origin or token


def _source_of(
    sources: list[CancellationTokenSource], token: CancellationToken | None
) -> CancellationTokenSource:
    (source,) = [s for s in sources if s.token is token]
    return source


class AsyncioTokenMachine(TokenMachine):
    backend = "asyncio"


class TrioTokenMachine(TokenMachine):
    backend = "trio"


TestTokenUnderConcurrencyOnAsyncio = AsyncioTokenMachine.TestCase
TestTokenUnderConcurrencyOnAsyncio.settings = PROFILE
TestTokenUnderConcurrencyOnTrio = TrioTokenMachine.TestCase
TestTokenUnderConcurrencyOnTrio.settings = PROFILE


# -- defects the machine found, fixed; each pinned by its own test ---------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("then", ["close", "cancel_after"])
async def test_a_passed_deadline_cancels_whether_or_not_the_token_was_read(
    anyio_backend: str, then: str
) -> None:
    # On asyncio the deadline's timer is a loop callback, which cannot run while this test does
    # not await: only the reads (or their absence) differ between the two sources.
    read, unread = CancellationTokenSource(), CancellationTokenSource()
    for source in (read, unread):
        source.cancel_after(0)
    assert read.token.is_cancellation_requested  # the deadline has passed
    for source in (read, unread):
        if then == "close":
            source.close()
        else:
            source.cancel_after(FAR)
    assert unread.token.is_cancellation_requested is read.token.is_cancellation_requested
    read.close()
    unread.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_register_on_a_child_whose_parent_deadline_passed_runs_the_callback_at_once(
    anyio_backend: str,
) -> None:
    parent = CancellationTokenSource()
    child = CancellationTokenSource(parent.token)
    parent.cancel_after(0)  # its timer cannot run: this test does not await
    ran: list[str] = []
    child.token.register(lambda: ran.append("ran"))
    try:
        assert ran == ["ran"], "the callback waits for a timer although the token reads cancelled"
    finally:
        assert child.token.is_cancellation_requested
        parent.close()


def test_a_child_is_cancelled_as_soon_as_its_parent_reads_cancelled() -> None:
    parent = CancellationTokenSource()
    seen: list[tuple[bool, bool]] = []
    children: list[CancellationTokenSource] = []
    # Registered before the child's link: it runs first when the parent is cancelled.
    parent.token.register(
        lambda: seen.append(
            (parent.token.is_cancellation_requested, children[0].token.is_cancellation_requested)
        )
    )
    children.append(CancellationTokenSource(parent.token))
    parent.cancel()
    assert seen == [(True, True)]


FINALIZER_SCRIPT = textwrap.dedent(
    """
    import gc
    from fastapi_abort import CancellationTokenSource

    other = CancellationTokenSource()

    class CancelsOnCollection:
        # A reference cycle: freed only by the cyclic collector, which runs its finalizer.
        def __init__(self):
            self.cycle = self

        def __del__(self):
            other.cancel()

    token = CancellationTokenSource().token
    # Make a collection start at one of the next few allocations; one of them is in register(),
    # under the token lock.
    for threshold in range(1, 6):
        gc.collect()
        gc.set_threshold(threshold)
        CancelsOnCollection()
        token.register(lambda: None)
        gc.set_threshold(700)
    print("no deadlock")
    """
)


def test_a_finalizer_that_cancels_during_register_does_not_deadlock() -> None:
    # In a child process: a deadlock holds the lock that every token shares, for good.
    try:
        result = subprocess.run(
            [sys.executable, "-c", FINALIZER_SCRIPT],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(DEADLOCK.format(what="register()", wait=WAIT)) from None
    assert result.stdout.strip() == "no deadlock", result.stderr
