from __future__ import annotations

from django.urls import path

from director import views

app_name = "director"

urlpatterns = [
    path("", views.session_list, name="session_list"),
    path("registry/", views.registry, name="registry"),
    path("registry/pairing/rotate", views.pairing_rotate, name="pairing_rotate"),
]
