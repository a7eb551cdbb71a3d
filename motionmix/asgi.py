"""ASGI entry point: Django for HTTP, Channels consumers for WebSockets.

`/_ping` is answered before Django by a bare ASGI handler: a liveness probe for load balancers
and the floor the device API benchmark compares itself with. Heartbeats, most of the traffic,
take the group-commit path of devices/heartbeats.py.
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

from devices.consumers import DeviceConsumer  # noqa: E402
from devices.heartbeats import PATH as HEARTBEAT_PATH  # noqa: E402
from devices.heartbeats import heartbeat_endpoint  # noqa: E402
from devices.longpoll import PATH as COMMANDS_PATH  # noqa: E402
from devices.longpoll import commands_endpoint  # noqa: E402
from director.routing import websocket_urlpatterns as director_ws  # noqa: E402
from motionmix.limits import with_body_limits  # noqa: E402
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


def with_fast_paths(app: ASGIApp) -> ASGIApp:
    """`app` behind the fast paths; every path but `/_ping` (which reads no body) is behind
    its body cap (motionmix/limits.py)."""

    async def routes(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == HEARTBEAT_PATH:
            # The hottest device call skips Django's request cycle (devices/heartbeats.py).
            await heartbeat_endpoint(scope, receive, send)
        elif path == COMMANDS_PATH:
            # A long poll must not hold a Django worker thread while it waits.
            await commands_endpoint(scope, receive, send)
        else:
            await app(scope, receive, send)

    limited = with_body_limits(routes)

    async def http(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/_ping":
            await ping(scope, receive, send)
        else:
            await limited(scope, receive, send)

    return http


DEVICE_SOCKET_PATH = "/ws/v1/device/"
device_socket = DeviceConsumer.as_asgi()
# Operator sockets carry the login session; the origin check stops cross-site pages.
operator_sockets = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(director_ws)))


async def websockets(scope: Scope, receive: Receive, send: Send) -> None:
    # The capture app is not a browser: it sends no Origin and no cookies, only its token,
    # which the device consumer checks (with the Host, as the heartbeat path does).
    if scope["path"] == DEVICE_SOCKET_PATH:
        await device_socket(scope, receive, send)
    else:
        await operator_sockets(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": with_fast_paths(django_asgi_app),
        "websocket": websockets,
    }
)
