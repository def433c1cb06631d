"""The benchmark suite: ``python -m benchmarks [--quick] [--out DIR]``.

Real uvicorn servers (httptools + uvloop) on 127.0.0.1, plain FastAPI against the same app with
fastapi-abort installed, each pair measured in the same run, interleaved, over several rounds.
"""
