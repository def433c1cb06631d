from fastapi import FastAPI, WebSocket

from fastapi_abort import RequestAborted, install

app = FastAPI()
install(app)


@app.websocket("/draws")
async def draws(websocket: WebSocket, ct: RequestAborted) -> None:
    await websocket.accept()
    number = 0
    # This loop only sends: it never calls receive(), yet it stops when the peer leaves.
    while True:
        number += 1
        await websocket.send_json({"draw": number})
        await ct.sleep(1)  # raises OperationCancelled once the peer has left: a quiet end
