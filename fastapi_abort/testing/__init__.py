"""Test an app's endpoints with a client that leaves: ``fastapi_abort.testing``.

(Interim: the module moved here whole; the next commit splits it by concept.)
"""

from ._client import *  # noqa: F403
from ._client import (  # noqa: F401
    AFTER_COMPLETE,
    BAD_BYTES,
    BAD_CHUNKS,
    BAD_SECONDS,
    BAD_TIMEOUT,
    CLIENT_LEFT,
    CLIENT_THERE,
    CONTENT_AND_JSON,
    EXPECTED_BODY,
    EXPECTED_START,
    LEAVE_REUSED,
    LIFESPAN_FAILED,
    LIFESPAN_TIMED_OUT,
    MIDDLEWARE_MISSING,
    NO_RESPONSE,
    NOT_LIFESPAN,
    NOT_OPEN,
    NOT_READING,
    READING,
    RESPONSE_COMPLETE,
    RESPONSE_STARTED,
    TIMED_OUT,
)
from ._client import __all__ as __all__
