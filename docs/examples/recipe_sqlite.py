import sqlite3
from contextlib import closing

from fastapi import FastAPI

from fastapi_abort import OperationCancelled, RequestAborted, install

app = FastAPI()
install(app)
DATABASE = "shop.sqlite3"
SLOW_QUERY = "SELECT count(*) FROM sales AS a JOIN sales AS b ON a.amount < b.amount"


@app.get("/pairs")
def pairs(ct: RequestAborted) -> int:  # def: FastAPI runs it in a worker thread
    # check_same_thread=False: the callback runs in the event loop's thread.
    db = sqlite3.connect(DATABASE, check_same_thread=False)
    with closing(db), ct.register(db.interrupt):
        ct.throw_if_cancellation_requested()  # interrupt() only stops a running statement
        try:
            (count,) = db.execute(SLOW_QUERY).fetchone()
        except sqlite3.OperationalError as exc:  # "interrupted"
            if not ct.is_cancellation_requested:
                raise
            raise OperationCancelled(ct) from exc
    return int(count)
