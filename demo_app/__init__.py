"""The fastapi-abort demo: ``python -m demo_app``, then open http://127.0.0.1:8000/.

The app is also a factory for any ASGI server: ``uvicorn demo_app:create_app --factory``.
"""

from demo_app.app import create_app

__all__ = ("create_app",)
