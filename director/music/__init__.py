"""The session's music track: upload, beat grid, playback cues.

`probe` checks an upload with PyAV (opens, has audio, decodes to the end), `analysis` finds
the beat grid (librosa; run in a child process by `jobs`, never in a request), `services`
holds every change of state, `selectors` the reads (`session_music` for the export), `views`
the operator's endpoints, `broadcast` the analysis-progress push, `ranges` the byte ranges the
<audio> element needs to seek.

`probe` and `analysis` import nothing of Django: the analysis child process runs
`python -m director.music.analysis` without setting Django up.
"""

from __future__ import annotations
