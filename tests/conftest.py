"""What every test file shares: async tests run on both asyncio and trio.

A file whose async tests need one backend overrides ``anyio_backend`` (and says why); a single
test narrows it with ``@pytest.mark.parametrize("anyio_backend", ["asyncio"])``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend
