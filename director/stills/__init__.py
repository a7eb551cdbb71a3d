"""Stills: the full-resolution pictures cameras upload, from the device API to the strip.

`upload` streams the multipart file to a temporary file while hashing it, `images` checks and
thumbnails it, `naming` says where it goes, `services.still_ingest` stores it, `broadcast`
tells the operator's socket, `selectors`, `fragments` and `views` show it, `links` addresses it.
The device endpoint is `director/api.py`.
"""

from __future__ import annotations
