"""fastapi-abort: stop the work when the client goes away.

ASP.NET Core's ``HttpContext.RequestAborted`` for FastAPI: a per-request cancellation token that
the server trips when the client disconnects.
"""

from ._budget import BUDGET_HEADER as BUDGET_HEADER
from ._cancelled import OperationCancelled as OperationCancelled
from ._config import Options as Options
from ._dependency import RequestAborted as RequestAborted
from ._dependency import deadline as deadline
from ._dependency import get_request_aborted as get_request_aborted
from ._dependency import preemptive as preemptive
from ._dependency import request_aborted as request_aborted
from ._endings import AbortedRequest as AbortedRequest
from ._handler import operation_cancelled_handler as operation_cancelled_handler
from ._install import install as install
from ._middleware import RequestAbortedMiddleware as RequestAbortedMiddleware
from ._reason import CancellationReason as CancellationReason
from ._registration import CancellationTokenRegistration as CancellationTokenRegistration
from ._source import CancellationTokenSource as CancellationTokenSource
from ._stopping import StopOnShutdown as StopOnShutdown
from ._stopping import stop_on_shutdown as stop_on_shutdown
from ._stopping import stopping_token as stopping_token
from ._token import CancellationToken as CancellationToken

__version__ = "0.1.0"

__all__ = (
    "BUDGET_HEADER",
    "AbortedRequest",
    "CancellationReason",
    "CancellationToken",
    "CancellationTokenRegistration",
    "CancellationTokenSource",
    "OperationCancelled",
    "Options",
    "RequestAborted",
    "RequestAbortedMiddleware",
    "StopOnShutdown",
    "deadline",
    "get_request_aborted",
    "install",
    "operation_cancelled_handler",
    "preemptive",
    "request_aborted",
    "stop_on_shutdown",
    "stopping_token",
)
