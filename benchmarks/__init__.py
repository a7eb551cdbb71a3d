"""Timing runs against a real server; see README.md. Not collected by pytest."""

from __future__ import annotations
