"""The chaos run: thousands of requests against real servers, each client misbehaving in its own
seeded way, and every single request accounted for.

``python -m tests.chaos --requests 5000 --concurrency 200 --server uvicorn-httptools`` runs it
and prints a report; ``tests/chaos/test_chaos.py`` runs a reduced size under pytest.
"""
