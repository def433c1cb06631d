from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app

from fastapi_abort import AbortedRequest, RequestAborted, install

registry = CollectorRegistry()
ABORTED = Counter(
    "http_requests_aborted",
    "Requests that their token ended: the client left (499) or the deadline passed (504).",
    ["method", "route", "status"],
    registry=registry,
)
CUT_SHORT = Histogram(
    "http_request_aborted_after_seconds",
    "Seconds of work that aborted requests were cut short at.",
    ["route"],
    registry=registry,
)
DELIVERED = Counter(
    "http_response_aborted_body_bytes",
    "Body bytes handed to the server for requests whose client then left: what was delivered.",
    ["route"],
    registry=registry,
)


def count(aborted: AbortedRequest) -> None:
    # The path, not the full URL: no query string. Keep label values few: a route template
    # (or a prefix) rather than paths with ids in them.
    route = "/" + aborted.path.lstrip("/").split("/", 1)[0]
    ABORTED.labels(aborted.method, route, str(aborted.status_code)).inc()
    CUT_SHORT.labels(route).observe(aborted.elapsed)
    DELIVERED.labels(route).inc(aborted.body_bytes)


app = FastAPI()
install(app, on_abort=count)
app.mount("/metrics", make_asgi_app(registry=registry))


@app.get("/draw/{ticket}")
async def draw(ticket: int, ct: RequestAborted) -> dict[str, int]:
    await ct.sleep(10)
    return {"ticket": ticket}
