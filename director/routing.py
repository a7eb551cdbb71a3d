from __future__ import annotations

from django.urls import path

from director.consumers import RegistryConsumer, SessionConsumer

websocket_urlpatterns = [
    path("ws/director/registry/", RegistryConsumer.as_asgi()),
    path("ws/director/sessions/<uuid:session_id>/", SessionConsumer.as_asgi()),
]
