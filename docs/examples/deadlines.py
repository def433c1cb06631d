import anyio
from fastapi import Depends, FastAPI

from fastapi_abort import RequestAborted, deadline, install, preemptive

app = FastAPI()
# Every request's token trips after 10 s, with reason "deadline"; the client gets a 504.
install(app, deadline=10)


@app.get("/report", dependencies=[Depends(deadline(2))])  # this route: 2 s
async def report(ct: RequestAborted) -> dict[str, int]:
    total = 0
    for month in range(1, 13):
        await ct.sleep(0.5)  # cooperative: the token's own sleep
        total += month
    return {"total": total}


@app.get("/export", dependencies=[Depends(deadline(None))])  # this route: no deadline
async def export(ct: RequestAborted) -> dict[str, str]:
    await ct.sleep(0.1)
    return {"export": "done"}


@app.get("/legacy", dependencies=[Depends(preemptive)])  # cancelled at its next await
async def legacy() -> dict[str, str]:
    await anyio.sleep(30)  # checks no token: preemptive mode cancels it anyway
    return {"legacy": "done"}
