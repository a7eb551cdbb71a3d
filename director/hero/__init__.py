"""The hero feed: WHIP ingest, WHEP playback and the relay between them.

`runtime.hero_relay()` is the process's relay (relay.py); `broadcast` carries switches to it and
previews from it; `tracks` holds the frames; `sdp` checks offers.
"""
