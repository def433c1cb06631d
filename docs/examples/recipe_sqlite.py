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
    with closing(sqlite3.connect(DATABASE)) as db:
        # SQLite calls this every 10,000 steps of a statement, in this thread; a true answer
        # stops the statement with OperationalError("interrupted").
        db.set_progress_handler(lambda: ct.is_cancellation_requested, 10_000)
        try:
            (count,) = db.execute(SLOW_QUERY).fetchone()
        except sqlite3.OperationalError as exc:
            if not ct.is_cancellation_requested:
                raise
            raise OperationCancelled(ct) from exc
    return int(count)


@app.get("/pairs/interrupted")
def pairs_interrupted(ct: RequestAborted) -> int:
    # interrupt() from a thread of its own once the client leaves, repeated until the
    # statement stops (one sent before execute() started would be lost); the error it causes
    # becomes OperationCancelled, the quiet 499.
    with (
        closing(sqlite3.connect(DATABASE)) as db,
        ct.cancel_on(db.interrupt, translate=(sqlite3.OperationalError,)),
    ):
        (count,) = db.execute(SLOW_QUERY).fetchone()
    return int(count)
