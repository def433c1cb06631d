"""The public API of ``fastapi_abort``: ``__all__`` names exactly it."""

import pickle
import traceback
import types

import fastapi_abort
from fastapi_abort import CancellationTokenSource, OperationCancelled


def test_all_is_exactly_the_public_api() -> None:
    # Submodules (fastapi_abort.testing, fastapi_abort.httpx) are imported on their own.
    public = {
        name
        for name, value in vars(fastapi_abort).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(fastapi_abort.__all__) == public
    assert isinstance(fastapi_abort.__all__, tuple)


def test_operation_cancelled_is_named_where_users_import_it_from() -> None:
    # What a traceback's last line, an OpenTelemetry span's error.type and Sentry show.
    source = CancellationTokenSource()
    source.cancel()
    try:
        source.token.throw_if_cancellation_requested()
    except OperationCancelled as exc:
        caught = exc
    line = traceback.format_exception_only(type(caught), caught)[-1]
    assert line.startswith("fastapi_abort.OperationCancelled: The operation was cancelled")
    assert pickle.loads(pickle.dumps(OperationCancelled)) is OperationCancelled
