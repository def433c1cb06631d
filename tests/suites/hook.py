"""The patch: ``install(app)`` on every Starlette and FastAPI app a suite builds.

Copied into each suite venv's site-packages as ``fastapi_abort_suite_hook.py`` and imported
there by ``fastapi_abort_suite_hook.pth`` at every interpreter start, so it reaches the
subprocesses a suite starts too (servers, ``docs_src`` examples run as scripts). Without
``FASTAPI_ABORT_SUITE`` in the environment it does nothing at all: the shipped run is the
suite as its authors run it.

With ``FASTAPI_ABORT_SUITE=construct`` the first import of ``starlette.applications`` and of
``fastapi.applications`` is followed by wrapping ``Starlette.__init__`` and ``FastAPI.__init__``:
``install(self)`` runs right after the outermost of them returns, once per app (no FastAPI
release calls ``Starlette.__init__``, but a subclass that calls both is still installed once),
so before any ``add_middleware``, exception handler or instrumentation call the test makes.
With ``FASTAPI_ABORT_SUITE=late`` it runs as late as it can instead: when the app is first
called (``Starlette.__call__``, the first request or lifespan), just before the middleware
stack is built, after everything the test set up. An app whose stack is already built by then
(a test that called ``build_middleware_stack()`` itself) is left alone and counted as skipped.

Every app patched makes one line in ``$FASTAPI_ABORT_SUITE_APPS/<pid>.txt``, written when the
process exits (a process killed by a signal writes none): the mode, then ``installed``,
``skipped`` or ``failed``, then the app's class. An ``install()`` that raises is
recorded and re-raised, so the test that built the app fails (a difference, not a silence).

Only the standard library is imported here: the module runs in every process of the venv.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import weakref
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import Receive, Scope, Send

MODE_VARIABLE = "FASTAPI_ABORT_SUITE"
APPS_VARIABLE = "FASTAPI_ABORT_SUITE_APPS"
CONSTRUCT = "construct"
LATE = "late"
MODES = (CONSTRUCT, LATE)
UNKNOWN_MODE = "{variable}={mode!r} is not a mode of the suite hook; one of {modes}"
#: The modules whose application class is wrapped, and that class's name.
TARGETS = {"starlette.applications": "Starlette", "fastapi.applications": "FastAPI"}

#: The apps whose constructor is running (by id: the object is not yet complete); the nested
#: constructor of a subclass that calls both sees its id here and does not install.
_constructing: set[int] = set()
#: The apps installed in late mode.
_installed: weakref.WeakSet[Starlette] = weakref.WeakSet()
_lock = threading.Lock()
#: The lines to write at exit.
_lines: list[str] = []


def _record(mode: str, what: str, app: object) -> None:
    kind = type(app)
    with _lock:
        if not _lines:
            atexit.register(_write)
        _lines.append(f"{mode} {what} {kind.__module__}.{kind.__qualname__}\n")


def _write() -> None:
    # At exit, not as each app is patched: a write inside a running event loop is blocking
    # I/O, which Starlette's suite fails (blockbuster).
    directory = os.environ.get(APPS_VARIABLE)
    if directory:
        path = os.path.join(directory, f"{os.getpid()}.txt")
        with open(path, "a", encoding="utf-8") as file:
            file.writelines(_lines)


def _install(mode: str, app: Starlette) -> None:
    from fastapi_abort import install

    try:
        install(app)
    except BaseException as error:
        _record(mode, f"failed:{type(error).__name__}", app)
        raise
    _record(mode, "installed", app)


def _wrap_init(cls: type[Starlette]) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Starlette, *args: Any, **kwargs: Any) -> None:
        key = id(self)
        with _lock:
            outermost = key not in _constructing
            _constructing.add(key)
        try:
            original(self, *args, **kwargs)
        finally:
            if outermost:
                with _lock:
                    _constructing.discard(key)
        if outermost:
            _install(CONSTRUCT, self)

    cls.__init__ = __init__  # type: ignore[method-assign]


def _wrap_call(cls: type[Starlette]) -> None:
    original = cls.__call__

    @functools.wraps(original)
    async def __call__(self: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
        with _lock:
            first = self not in _installed
            _installed.add(self)
        if first:
            if self.middleware_stack is None:
                _install(LATE, self)
            else:
                _record(LATE, "skipped", self)
        await original(self, scope, receive, send)

    cls.__call__ = __call__  # type: ignore[method-assign]


def _patch(mode: str, module: ModuleType) -> None:
    cls = getattr(module, TARGETS[module.__name__])
    if mode == CONSTRUCT:
        _wrap_init(cls)
    elif module.__name__ == "starlette.applications":
        # FastAPI.__call__ ends in Starlette.__call__ (super()), so one wrapper covers both.
        _wrap_call(cls)


class _Loader(importlib.abc.Loader):
    """The module's own loader, then the patch, once the module is executed."""

    def __init__(self, inner: importlib.abc.Loader, mode: str) -> None:
        self._inner = inner
        self._mode = mode

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _patch(self._mode, module)

    def __getattr__(self, name: str) -> Any:
        # get_source, get_filename, get_resource_reader...: tracebacks and inspect use them.
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the target modules as the path finder does, with the patching loader."""

    def __init__(self, mode: str) -> None:
        self._mode = mode

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader, self._mode)
        return spec


def activate(mode: str) -> None:
    """Patch the application classes (now if imported already, else at their first import)."""
    if mode not in MODES:
        raise RuntimeError(UNKNOWN_MODE.format(variable=MODE_VARIABLE, mode=mode, modes=MODES))
    loaded = [sys.modules[name] for name in TARGETS if name in sys.modules]
    for module in loaded:
        _patch(mode, module)
    if len(loaded) < len(TARGETS):
        sys.meta_path.insert(0, _Finder(mode))


if os.environ.get(MODE_VARIABLE):
    activate(os.environ[MODE_VARIABLE])
