from __future__ import annotations

from django.urls import path

from director import views

app_name = "director"

urlpatterns = [
    path("", views.session_list, name="session_list"),
    path("sessions/new", views.session_create, name="session_create"),
    path("sessions/<uuid:session_id>/start", views.session_start, name="session_start"),
    path("sessions/<uuid:session_id>/stop", views.session_stop, name="session_stop"),
    path("registry/", views.registry, name="registry"),
    path("registry/pairing/rotate", views.pairing_rotate, name="pairing_rotate"),
]
