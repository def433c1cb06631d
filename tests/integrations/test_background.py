"""Background tasks with fastapi-abort, on real uvicorn: ``BackgroundTasks`` and a streaming
response's ``background``, with the plugin (``app``) and without (``plain``) in
``tests.integrations.apps.background_app``. No task that the app without the plugin runs may be
lost; a task queued by an endpoint that raises is not run, by FastAPI's rule, with the plugin or
without."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integrations.twin_servers import Start, assert_quiet_line, twin_servers
from tests.raw_http import leave, new_id, read_until, request_bytes
from tests.serve import running

pytestmark = pytest.mark.server

MODULE = "tests.integrations.apps.background_app"
KIND = "uvicorn-h11"
VARIANTS = ("app", "plain")
#: How long a test waits for a background task that must not run, once the request is over
#: (the tasks run before the app returns: by then they have run, or never will).
NOT_RUN_WAIT = 0.5


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("background")) as start:
        yield start


def get(start: Start, variant: str, path: str) -> httpx.Response:
    served = start(KIND, variant)
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        return client.get(path)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_queued_task_runs(start: Start, variant: str) -> None:
    rid = new_id()
    assert get(start, variant, f"/queue/{rid}").json() == {"rid": rid}
    assert start(KIND, variant).wait_for(rid, "background")["happened"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_task_queued_before_an_exception_does_not_run(start: Start, variant: str) -> None:
    rid = new_id()
    response = get(start, variant, f"/queue-then-raise/{rid}")
    assert (response.status_code, response.json()) == (409, {"detail": "taken"})
    assert not start(KIND, variant).wait_for(rid, "background", NOT_RUN_WAIT)["happened"]


def test_a_task_queued_before_the_client_left_does_not_run(start: Start) -> None:
    """The endpoint ends with ``OperationCancelled``: an exception like any other to FastAPI,
    which then runs none of the request's tasks."""
    served = start(KIND, "app")
    rid = new_id()
    with served.connect() as client:
        client.sendall(request_bytes(f"/queue-then-wait/{rid}"))
        assert served.wait_for(rid, "started")["happened"]
        leave(client)
    result = served.wait_for(rid, "logged")
    assert result["ended"] == "OperationCancelled"
    assert_quiet_line(served, f"/queue-then-wait/{rid}", result["log_lines"])
    assert not served.wait_for(rid, "background", NOT_RUN_WAIT)["happened"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_streaming_response_runs_its_task_after_the_stream(start: Start, variant: str) -> None:
    rid = new_id()
    response = get(start, variant, f"/stream/{rid}?n=3")
    assert response.content == b"chunk 0\nchunk 1\nchunk 2\n"
    assert start(KIND, variant).wait_for(rid, "background")["happened"]


def leave_mid_stream(start: Start, variant: str, route: str = "stream") -> str:
    served = start(KIND, variant)
    rid = new_id()
    with served.connect() as client:
        client.sendall(request_bytes(f"/{route}/{rid}"))
        read_until(client, b"chunk 0\n")
        leave(client)
    assert served.wait_for(rid, "finished")["happened"]
    return rid


def test_without_the_plugin_a_stream_cut_short_still_runs_its_task(start: Start) -> None:
    rid = leave_mid_stream(start, "plain")
    served = start(KIND, "plain")
    assert served.wait_for(rid, "finished")["ended"] == "CancelledError"
    assert served.wait_for(rid, "background")["happened"]


def test_with_the_plugin_a_stream_cut_short_still_runs_its_task(start: Start) -> None:
    """Starlette's StreamingResponse hears the disconnect before the token trips, cancels the
    stream as it does without the plugin, and runs its task."""
    rid = leave_mid_stream(start, "app")
    served = start(KIND, "app")
    result = served.wait_for(rid, "logged")
    assert result["ended"] == "CancelledError"
    assert_quiet_line(served, f"/stream/{rid}", result["log_lines"])
    assert served.wait_for(rid, "background")["happened"]


def test_with_the_plugin_a_def_stream_cut_short_still_runs_its_task(start: Start) -> None:
    """The def generator's sleep_blocking(), woken in its worker thread by the token, raises the
    cancellation of the task that Starlette cancels (not OperationCancelled, which would escape
    the response before its task): the stream ends as without the plugin."""
    rid = leave_mid_stream(start, "app", "stream-sync")
    served = start(KIND, "app")
    result = served.wait_for(rid, "logged")
    assert result["ended"] == "CancelledError"
    assert_quiet_line(served, f"/stream-sync/{rid}", result["log_lines"])
    assert served.wait_for(rid, "background", NOT_RUN_WAIT)["happened"]


# -- the recipe of the docs: work that must happen, in a task group of the app's -----------------


def test_the_recipe_sends_the_receipt_though_the_client_left(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    log = tmp_path_factory.mktemp("kept") / "server.log"
    with running(KIND, log, "tests.integrations.apps.kept_example:app") as served:
        with served.connect() as client:
            client.sendall(request_bytes("/orders/7", method="POST"))
            assert served.wait_for("7", "started")["happened"]
            leave(client)
        result = served.wait_for("7", "logged")
        assert_quiet_line(served, "/orders/7", result["log_lines"], method="POST")
        assert served.wait_for("7", "background")["happened"]
    assert not served.noisy()
