from fastapi import FastAPI
from opentelemetry import metrics

from fastapi_abort import AbortedRequest, RequestAborted, install

# With no SDK configured this is a no-op meter; configure a MeterProvider (and an exporter) at
# start-up, as for any OpenTelemetry instrumentation.
meter = metrics.get_meter("fastapi_abort.example")
aborted_requests = meter.create_counter(
    "http.server.aborted_requests",
    unit="{request}",
    description="Requests that their token ended: the client left, or the deadline passed.",
)
aborted_after = meter.create_histogram(
    "http.server.aborted_after",
    unit="s",
    description="Seconds of work that aborted requests were cut short at.",
)
delivered = meter.create_counter(
    "http.server.aborted_body_size",
    unit="By",
    description="Body bytes handed to the server for aborted requests: what was delivered.",
)


def record(aborted: AbortedRequest) -> None:
    attributes: dict[str, str | int] = {
        "http.request.method": aborted.method,
        "http.response.status_code": aborted.status_code,
        "fastapi_abort.reason": str(aborted.reason),
        "fastapi_abort.response_started": str(aborted.response_started).lower(),
    }
    aborted_requests.add(1, attributes)
    aborted_after.record(aborted.elapsed, attributes)
    delivered.add(aborted.body_bytes, attributes)


app = FastAPI()
install(app, on_abort=record)


@app.get("/draw")
async def draw(ct: RequestAborted) -> dict[str, str]:
    await ct.sleep(10)
    return {"draw": "done"}
