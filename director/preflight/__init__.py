"""Preflight: a go/no-go check of a running deployment, in six sections (docs/preflight.md).

`manage.py preflight` and the Live Director's Preflight page both run `runner.preflight_run`.
"""
