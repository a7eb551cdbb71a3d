from __future__ import annotations

from django.urls import path, re_path

from director.consumers import RegistryConsumer, SessionConsumer, UnknownSocket

websocket_urlpatterns = [
    path("ws/director/registry/", RegistryConsumer.as_asgi()),
    path("ws/director/sessions/<uuid:session_id>/", SessionConsumer.as_asgi()),
    # Last: every other path closes with 4404 rather than raising in the router.
    re_path(r"", UnknownSocket.as_asgi()),
]
