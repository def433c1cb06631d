"""The server compatibility matrix: which disconnects reach the app, under which server.

Every column is one server configuration started for real on 127.0.0.1; every row is one way a
client can leave. ``tests/test_matrix.py`` runs the cells and checks them against
``tests.matrix.expected``; ``python -m tests.matrix.page`` renders ``docs/servers.md`` from the
records the run leaves in ``$ABORT_MATRIX_DIR`` (``build/matrix/`` by default).
"""
