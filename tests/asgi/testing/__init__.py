"""The testing kit itself (``fastapi_abort.testing``), one file per module of the kit.

Raw ASGI apps behind the middleware pin what the kit's server does (uvicorn's receive and send);
small FastAPI apps pin what it reports (the token, the status, the quiet line). Every trigger but
``leave_after()`` fires on what the app does, so the tests wait on nothing but events. On asyncio
and trio.
"""
