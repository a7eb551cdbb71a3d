"""Device clocks against the server's, from heartbeat round trips (NTP's on-wire arithmetic).

A device reports, with each heartbeat, the four times of its previous exchange:

    t0 sent_at      device clock, when it sent the previous heartbeat
    t1 received_at  server clock, when the server received it (from the answer)
    t2 server_time  server clock, when the server answered (from the answer)
    t3 returned_at  device clock, when the answer arrived

offset = ((t0 - t1) + (t3 - t2)) / 2 is device clock minus server clock, and
delay = (t3 - t0) - (t2 - t1) is the time on the wire. The sample with the smallest delay is
the most trustworthy (its error is at most delay / 2), so the estimate keeps the best recent
sample and lets it age out, which tracks drift without jumping on a slow exchange.

A device that reports no round trip gets a one-way estimate, t0 - t1 of its latest beat: late
by the one-way delay (milliseconds on a LAN), and marked as such (no delay).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# A sample older than this gives way to any fresh one, so a drifting clock is followed.
BEST_SAMPLE_MAX_AGE_S = 30.0
# A fresh sample this much slower than the best one still replaces it (jitter, not congestion).
DELAY_SLACK_S = 0.002
# Exchanges slower than this (or with times out of order) say nothing useful about the clock.
MAX_DELAY_S = 5.0
# The previous exchange must be recent: a sample replayed long after says nothing about now.
MAX_SAMPLE_AGE_S = 120.0


@dataclass(frozen=True)
class Sample:
    sent_at: float
    received_at: float
    server_time: float
    returned_at: float

    @property
    def offset_s(self) -> float:
        return ((self.sent_at - self.received_at) + (self.returned_at - self.server_time)) / 2

    @property
    def delay_s(self) -> float:
        return (self.returned_at - self.sent_at) - (self.server_time - self.received_at)


def sample_problem(sample: Sample, *, now: float) -> str | None:
    """Why a reported round trip cannot be used, or None."""
    if sample.server_time < sample.received_at:
        return "clock.server_time is before clock.received_at"
    if sample.returned_at < sample.sent_at:
        return "clock.returned_at is before clock.sent_at"
    if not 0 <= sample.delay_s <= MAX_DELAY_S:
        return f"the round trip took {sample.delay_s:.3f} s; at most {MAX_DELAY_S:g} s is usable"
    if not now - MAX_SAMPLE_AGE_S <= sample.server_time <= now + 1.0:
        return "clock.server_time is not a recent answer from this server"
    return None


@dataclass(frozen=True)
class Estimate:
    offset_s: float
    delay_s: float | None  # None: a one-way estimate
    sampled_at: datetime


def better(current: Estimate | None, candidate: Estimate) -> bool:
    """Whether `candidate` should replace the device's current estimate."""
    if current is None or current.delay_s is None:
        return True
    if candidate.delay_s is None:
        return (candidate.sampled_at - current.sampled_at).total_seconds() > 4 * (
            BEST_SAMPLE_MAX_AGE_S
        )
    if candidate.delay_s <= current.delay_s + DELAY_SLACK_S:
        return True
    return (candidate.sampled_at - current.sampled_at).total_seconds() > BEST_SAMPLE_MAX_AGE_S


def to_device(server_unix: float, offset_s: float | None) -> float:
    """A server time on the device's clock."""
    return server_unix + (offset_s or 0.0)


def to_server(device_unix: float, offset_s: float | None) -> float:
    """A device time on the server's clock."""
    return device_unix - (offset_s or 0.0)


# --- Offset and drift over many samples -----------------------------------------------------

# Samples this much slower than the fastest one weigh a quarter as much (a slow exchange is
# asymmetric by up to half its delay, so it says less about the offset).
DELAY_SCALE_S = 0.0015
# The window a fit looks at: long enough to see drift, short enough to follow a changed clock.
FIT_WINDOW_S = 1800.0
FIT_MIN_SAMPLES = 8


@dataclass(frozen=True)
class Fit:
    """A device clock against the server's: offset(t) = offset_s + drift * (t - at)."""

    offset_s: float  # device minus server, at `at`
    drift_ppm: float  # how fast the offset grows: microseconds per second
    at: float  # server clock, unix s: the fit's reference time (its latest sample)
    uncertainty_s: float  # one standard error of the offset at `at`, plus the best delay / 2
    samples: int
    best_delay_s: float

    def offset_at(self, server_unix: float) -> float:
        return self.offset_s + self.drift_ppm * 1e-6 * (server_unix - self.at)


def fit(samples: list[Sample]) -> Fit | None:
    """Offset and drift by weighted least squares over round-trip samples, as NTP trusts its
    low-delay exchanges: weight 1 / (1 + ((delay - best) / DELAY_SCALE_S)²). Each sample is
    placed at the server time it measured, (received_at + server_time) / 2. None for fewer
    than FIT_MIN_SAMPLES samples or less than a second of span."""
    usable = [s for s in samples if 0 <= s.delay_s <= MAX_DELAY_S]
    if len(usable) < FIT_MIN_SAMPLES:
        return None
    best = min(s.delay_s for s in usable)
    times = [(s.received_at + s.server_time) / 2 for s in usable]
    ref = max(times)
    if ref - min(times) < 1.0:
        return None
    weights = [1.0 / (1.0 + ((s.delay_s - best) / DELAY_SCALE_S) ** 2) for s in usable]
    xs = [t - ref for t in times]
    ys = [s.offset_s for s in usable]
    total = sum(weights)
    mean_x = sum(w * x for w, x in zip(weights, xs, strict=True)) / total
    mean_y = sum(w * y for w, y in zip(weights, ys, strict=True)) / total
    sxx = sum(w * (x - mean_x) ** 2 for w, x in zip(weights, xs, strict=True))
    sxy = sum(w * (x - mean_x) * (y - mean_y) for w, x, y in zip(weights, xs, ys, strict=True))
    slope = sxy / sxx if sxx > 0 else 0.0
    intercept = mean_y - slope * mean_x  # the offset at x = 0, the reference time
    residual = sum(
        w * (y - (intercept + slope * x)) ** 2 for w, x, y in zip(weights, xs, ys, strict=True)
    )
    # Effective number of samples (Kish), for the standard error of a weighted fit.
    effective = total**2 / sum(w * w for w in weights)
    variance = residual / total * effective / max(1.0, effective - 2)
    stderr = (variance * (1 / effective + mean_x**2 / (sxx / total * effective))) ** 0.5
    return Fit(
        offset_s=intercept,
        drift_ppm=slope * 1e6,
        at=ref,
        uncertainty_s=stderr + best / 2,
        samples=len(usable),
        best_delay_s=best,
    )
