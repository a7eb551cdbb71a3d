"""ASGI entry point: Django for HTTP, Channels consumers for WebSockets.

`/_ping` is answered before Django by a bare ASGI handler: a liveness probe for load balancers
and the floor the device API benchmark compares itself with.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "motionmix.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: these modules touch models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from director.routing import websocket_urlpatterns as director_ws  # noqa: E402
from motionmix.types import ASGIApp, Receive, Scope, Send  # noqa: E402

PING_BODY = b'{"ok":true}'


async def ping(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(PING_BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": PING_BODY})


def with_ping(app: ASGIApp) -> ASGIApp:
    async def http(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/_ping":
            await ping(scope, receive, send)
            return
        await app(scope, receive, send)

    return http


application = ProtocolTypeRouter(
    {
        "http": with_ping(django_asgi_app),
        # Operator sockets carry the login session; the origin check stops cross-site pages.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(director_ws))),
    }
)
