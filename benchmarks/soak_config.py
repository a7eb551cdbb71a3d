"""The soak's knobs, shared by its modules (benchmarks/soak.py and the soak_*.py beside it):
the defaults of its options, the environment the server runs with, the bounds of every wait and
loop, the units, and the hosts it may talk to.
"""

from __future__ import annotations

# Pose costs the server per batch far more than per frame: on this 2-core machine one batch
# took about 6.5 ms of server CPU plus about 0.1 ms a frame (1 to 60 frames a batch). Phones
# send a batch every 0.5 s whatever the rate, so 30 phones make 60 batches a second, about half
# a core at any rate: no rate keeps that off the server. 10 fps (5 frames a batch) keeps the
# bodies small and the phones' projection work (the simulator shares the two cores) at a third
# of the simulator's default 30, and still gives the facing policy its newest second of pose.
DEFAULT_POSE_FPS = 10
DEFAULT_DEVICES = 30
DEFAULT_DURATION_S = 180.0
DEFAULT_WARMUP_S = 20.0
DEFAULT_STILL_EVERY_S = 5.0
DEFAULT_PAGES = 3
# A quarter of the default 2016x1512: the simulator renders every still and the server decodes
# each one to check it; 6 stills a second at full size would be the soak's largest cost.
DEFAULT_STILL_SIZE = "1008x756"
VIDEO_SIZE = "320x240"  # the smallest the simulator takes
DEFAULT_VIDEO_FPS = 1
SAMPLE_EVERY_S = 5.0
# What the server runs with, beyond running_server's test defaults.
SERVER_ENV = {
    # The production interval (running_server's is 1 s, for quick tests).
    "MOTIONMIX_HEARTBEAT_INTERVAL_S": "2",
    # Ghost's defaults would make its first hero-staleness proposal after 45 s on air and
    # repeat an idea after 30 s (120 s once vetoed): a handful per run. Shorter, so that the
    # stand-in has proposals to decide all through the window.
    "MOTIONMIX_GHOST_HERO_STALE_S": "15",
    "MOTIONMIX_GHOST_COOLDOWN_S": "15",
    "MOTIONMIX_GHOST_VETO_COOLDOWN_S": "30",
}
LIVE_SESSION_TIMEOUT_S = 120.0  # 30 phones pair and register, then the stand-in starts
SIMULATOR_STOP_S = 30.0
CAPTURE_GRACE_S = 20.0  # the lead (3 s at most), the upload, the ack
QUIET_TIMEOUT_S = 90.0  # cameras offline (3 missed beats) and open commands expired (15 s)
QUIET_STEADY_S = 3.0
DEFAULT_DRAIN_S = 180.0
PING_EVERY_S = 1.0
PING_TIMEOUT_S = 10.0
PAGE_DRAIN_S = 0.5  # how often the pages' received pushes are counted and let go
MAX_ERROR_SAMPLES = 5
MB = 1_000_000
KB = 1024
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
