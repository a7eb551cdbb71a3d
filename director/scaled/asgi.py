"""The ASGI application by role (`MOTIONMIX_ROLE`). A web process: the project's application,
with the hero feed's WHIP/WHEP requests forwarded to MOTIONMIX_HERO_RELAY_URL. The relay
process: the project's application, plus its status for the web processes (runtime.py's
`relay_status`), answered only to a request carrying the key derived from the shared secret.

`daphne director.scaled.asgi:application` runs it directly; `manage.py serve` picks it by role.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.utils.crypto import constant_time_compare

from director.hero.runtime import (
    RELAY_KEY_HEADER,
    RELAY_STATUS_PATH,
    relay_status_key,
    relay_status_local,
)
from director.scaled.forward import RelayForwarder
from motionmix.asgi import application as project_application
from motionmix.types import ASGIApp, Receive, Scope, Send


def with_relay_status(app: ASGIApp) -> ASGIApp:
    key_header = RELAY_KEY_HEADER.lower().encode()

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != RELAY_STATUS_PATH:
            await app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(key_header, b"").decode("latin-1")
        if constant_time_compare(given, relay_status_key()):
            status, body = 200, relay_status_local()
        else:
            status, body = 404, {"error": "not_found", "detail": "No such page."}
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return serve


def role_application(app: ASGIApp) -> ASGIApp:
    if settings.MOTIONMIX_ROLE == "web":
        return RelayForwarder(app, relay_url=settings.MOTIONMIX_HERO_RELAY_URL)
    if settings.MOTIONMIX_ROLE == "relay":
        return with_relay_status(app)
    return app


application = role_application(project_application)
