import logging

import anyio
import pytest
from quickstart import app  # your app
from testing import leave_after


def test_the_draw_stops_when_the_player_leaves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        with anyio.fail_after(5):  # bounded: a test that cannot hang
            await leave_after(app, "/happy/draw", 0.7)

    anyio.run(scenario)
    assert "request cancelled" in caplog.messages
    assert any("499 Client Closed Request" in message for message in caplog.messages)
