import time

from fastapi import FastAPI

from fastapi_abort import RequestAborted, install

app = FastAPI()
install(app)


@app.get("/export")
def export(ct: RequestAborted) -> dict[str, int]:
    done = 0
    for _ in range(10):
        ct.throw_if_cancellation_requested()  # before each step that cannot be interrupted
        time.sleep(0.2)  # one step of blocking work
        done += 1
        ct.sleep_blocking(0.3)  # a pause that ends early, raising, when the client leaves
    return {"steps": done}
