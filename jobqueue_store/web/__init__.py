"""The HTTP and websocket interface (aiohttp)."""

from jobqueue_store.web.app import create_app

__all__ = ["create_app"]
