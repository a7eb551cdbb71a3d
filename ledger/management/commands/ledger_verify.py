from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ledger.convex import ConvexLedger, SyncError
from ledger.selectors import event_list_for_stream


class Command(BaseCommand):
    help = "Compare a session's local outbox with Convex's sessionTimeline."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session", help="The session id (or 'fleet' for device events).")

    def handle(self, *args: Any, session: str, **options: Any) -> None:
        local = {str(e.event_id): e for e in event_list_for_stream(stream=session)}
        try:
            remote_rows = ConvexLedger().session_timeline(session)
        except SyncError as exc:
            raise CommandError(f"Convex could not be read: {exc}") from exc
        remote = {row["eventId"]: row for row in remote_rows}
        missing = [e for key, e in local.items() if key not in remote]
        extra = [row for key, row in remote.items() if key not in local]
        misordered = [
            key for key, row in remote.items() if key in local and int(row["seq"]) != local[key].seq
        ]
        self.stdout.write(
            f"session {session}: {len(local)} local, {len(remote)} in Convex, "
            f"{len(missing)} missing, {len(extra)} extra, {len(misordered)} with another seq"
        )
        for event in missing[:20]:
            self.stdout.write(f"  missing: #{event.seq} {event.type} ({event.status})")
        for row in extra[:20]:
            self.stdout.write(f"  extra: #{int(row['seq'])} {row['type']} {row['eventId']}")
        if missing or extra or misordered:
            raise CommandError("the ledger and Convex disagree")
        self.stdout.write(self.style.SUCCESS("in agreement"))
