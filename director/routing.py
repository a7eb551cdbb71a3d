from __future__ import annotations

from django.urls import path

from director.consumers import RegistryConsumer

websocket_urlpatterns = [
    path("ws/director/registry/", RegistryConsumer.as_asgi()),
]
