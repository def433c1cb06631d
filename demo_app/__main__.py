"""``python -m demo_app [--host HOST] [--port PORT] [--db PATH] [--database URL]``: serve the demo
with uvicorn."""

import argparse
import logging
from pathlib import Path

import uvicorn

from demo_app.app import create_app
from demo_app.report import ENV_VAR, default_path


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m demo_app", description="Serve the fastapi-abort demo."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"the SQLite file, created on first start (${ENV_VAR}, else {default_path()})",
    )
    parser.add_argument(
        "--database",
        default=None,
        metavar="URL",
        help="run the report on PostgreSQL instead (postgresql://user@host:port/db; its tables "
        "are made on first start; needs the demo-postgresql extra)",
    )
    args = parser.parse_args()
    # INFO and the logger's name, so that the lines from "fastapi_abort" and "demo_app.*" show.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # log_config=None: uvicorn's own lines go through the same root handler.
    uvicorn.run(create_app(args.db, args.database), host=args.host, port=args.port, log_config=None)


if __name__ == "__main__":
    main()
