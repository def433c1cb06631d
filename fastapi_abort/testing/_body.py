"""The request body as the client sends it, pulled one message at a time as the app reads."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import anyio

Content = bytes | Iterable[bytes] | AsyncIterable[bytes]


class _Body:
    """The request body, pulled as the app reads it: ``(chunk, more_body)`` per message."""

    def __init__(self, content: Content) -> None:
        self._whole: bytes | None = None
        self._sync: Iterator[bytes] | None = None
        self._async: AsyncIterator[bytes] | None = None
        if isinstance(content, bytes):
            self._whole = content
        elif isinstance(content, AsyncIterable):
            self._async = aiter(content)
        else:
            self._sync = iter(content)

    async def next(self) -> tuple[bytes, bool]:
        if self._whole is not None:
            return self._whole, False
        while True:
            if self._async is not None:
                chunk = await anext(self._async, None)
            else:
                assert self._sync is not None
                chunk = next(self._sync, None)
            if chunk is None:
                return b"", False
            if chunk:  # a server never delivers an empty chunk of a body still coming
                return bytes(chunk), True

    async def aclose(self) -> None:
        source = self._async
        self._async = self._sync = None
        close = getattr(source, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
