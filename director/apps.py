from __future__ import annotations

from django.apps import AppConfig


class DirectorConfig(AppConfig):
    name = "director"
    verbose_name = "Live Director"
