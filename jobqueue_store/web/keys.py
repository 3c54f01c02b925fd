"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from jobqueue_store.auth import Principal, TokenAuthority
    from jobqueue_store.config import Settings
    from jobqueue_store.hub import Hub
    from jobqueue_store.metrics import Metrics
    from jobqueue_store.service import JobService
    from jobqueue_store.storage.base import Store
    from jobqueue_store.web.ws import Subscribers

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[Store] = web.AppKey("store")
HUB: web.AppKey[Hub] = web.AppKey("hub")
SERVICE: web.AppKey[JobService] = web.AppKey("service")
AUTHORITY: web.AppKey[TokenAuthority] = web.AppKey("authority")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
SUBSCRIBERS: web.AppKey[Subscribers] = web.AppKey("subscribers")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
"""Request key of the caller's verified :class:`~jobqueue_store.auth.Principal`."""


def principal_of(request: web.Request) -> Principal:
    """The verified caller of ``request`` (set by the auth middleware)."""
    return request[PRINCIPAL]
