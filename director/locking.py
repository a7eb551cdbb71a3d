"""One order of row locks for the services of a session.

A still ingest or a command takes its camera's row, then the session stream's ledger counter
(when it records). A service that records on the stream first and then commands a camera (a
hero switch sends tallies, a Ghost decision carries out a switch or a capture, a stop sends
tally off and stop_publish) would take them the other way round, and the two would wait on
each other until PostgreSQL ended one. So every such service takes, in this order: the
session's row, its cameras' rows (by name, as Capture all and a session's start take them),
any proposal's row, and only then records. SQLite, with its one write lock, cannot deadlock;
the order costs it nothing.
"""

from __future__ import annotations

from uuid import UUID

from devices.models import Device
from director.models import GhostProposal, PhotoshootSession


def session_lock(session_id: UUID) -> PhotoshootSession:
    """The session's row and its cameras' rows, locked (FOR NO KEY UPDATE) in that order."""
    session = PhotoshootSession.objects.select_for_update(no_key=True).get(pk=session_id)
    cameras = list(session.devices.values_list("pk", flat=True))
    if cameras:
        list(
            Device.objects.select_for_update(no_key=True)
            .filter(pk__in=cameras)
            .order_by("name", "pk")
            .values_list("pk", flat=True)
        )
    return session


def proposal_session_lock(proposal_id: UUID) -> PhotoshootSession:
    """The proposal's session and cameras, locked before the proposal itself is (a proposal
    never changes session). Raises GhostProposal.DoesNotExist for an unknown id."""
    session_id = GhostProposal.objects.values_list("session_id", flat=True).get(pk=proposal_id)
    return session_lock(session_id)
