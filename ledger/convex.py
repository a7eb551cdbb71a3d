"""The Convex production tables, through the `convex` package's HTTP client.

Called only from Celery workers or the embedded ticker's worker threads, never from the ASGI
event loop: the HTTP client blocks (and the package's WebSocket client holds the GIL while it
waits). Every failure becomes a `SyncError` that says whether retrying can help.

The ledger's functions are internal (a deployment's URL is no secret): only a caller with the
deployment's admin key, CONVEX_DEPLOY_KEY, may call them. Without it, or with another
deployment's, Convex answers as if they did not exist; that is a configuration to fix, never a
reason to give up on the events, so it is a transient error that says what to set.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from django.conf import settings

from convex import ConvexError
from convex import http_client as convex_http


class SyncError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class _RequestsWithTimeout:
    """`ConvexHttpClient` calls `requests.post` with no timeout, so a deployment that stops
    answering would hang the worker for ever. The client looks `requests` up on its module at
    call time; this stand-in is the real module with a default timeout on `post`."""

    exceptions = requests.exceptions

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout_s)
        return requests.post(url, **kwargs)  # noqa: S113 - the timeout is set on the line above


_install_lock = threading.Lock()


def _install_timeout(timeout_s: float) -> None:
    with _install_lock:
        if not isinstance(convex_http.requests, _RequestsWithTimeout):
            convex_http.requests = _RequestsWithTimeout(timeout_s)  # type: ignore[assignment]


# Messages of errors that retrying cannot fix: the call itself is wrong.
PERMANENT_MARKERS = (
    "ArgumentValidationError",
    "Validator error",
    "validator",
    "Uncaught ConvexError",
)

# What Convex answers for an internal function called without its admin key (none, or one
# that is not this deployment's), the same as for a function it does not hold: either way the
# deployment's configuration is wrong, not the events, so they wait in the outbox. A deployment
# that refuses the key at the door answers HTTP 401 or 403 instead.
KEY_REFUSED_MARKERS = ("Could not find public function",)
KEY_REFUSED_STATUSES = ("401", "403")


def configured() -> bool:
    return bool(settings.CONVEX_URL)


class ConvexLedger:
    def __init__(self, url: str | None = None, deploy_key: str | None = None) -> None:
        url = url or settings.CONVEX_URL
        if not url:
            raise SyncError("CONVEX_URL is not set; events wait in the outbox.", permanent=False)
        _install_timeout(settings.CONVEX_TIMEOUT_S)
        self.client = convex_http.ConvexHttpClient(url.rstrip("/"))
        key = deploy_key if deploy_key is not None else settings.CONVEX_DEPLOY_KEY
        self.has_key = bool(key)
        if key:
            self.client.set_admin_auth(key)

    def _key_refused(self, name: str, said: str) -> SyncError:
        # The key itself never goes in the message: it ends up in logs and in the admin.
        why = (
            "the CONVEX_DEPLOY_KEY given is not this deployment's (or its functions are not "
            "deployed)"
            if self.has_key
            else "CONVEX_DEPLOY_KEY is not set"
        )
        return SyncError(
            f"{name}: Convex refused the call: {why}. The ledger's functions are internal: "
            "set CONVEX_DEPLOY_KEY to the deploy key of the deployment at CONVEX_URL for every "
            "process that syncs the ledger, and restart them. The events wait in the outbox. "
            f"(Convex said: {said})",
            permanent=False,
        )

    def _call(self, kind: str, name: str, args: dict[str, Any]) -> Any:
        try:
            if kind == "mutation":
                return self.client.mutation(name, args)
            return self.client.query(name, args)
        except ConvexError as exc:
            raise SyncError(f"{name}: {exc}", permanent=True) from exc
        except convex_http.ConvexExecutionError as exc:
            message = str(exc)
            if any(marker in message for marker in KEY_REFUSED_MARKERS):
                raise self._key_refused(name, message) from exc
            permanent = any(marker in message for marker in PERMANENT_MARKERS)
            raise SyncError(f"{name}: {message}", permanent=permanent) from exc
        except requests.RequestException as exc:
            raise SyncError(f"{name}: Convex unreachable ({exc})", permanent=False) from exc
        except Exception as exc:
            # The client raises a bare Exception for HTTP errors ("503 ..."): transient unless
            # the deployment says the request itself is bad.
            message = str(exc)
            if message.startswith(KEY_REFUSED_STATUSES):
                raise self._key_refused(name, message) from exc
            permanent = message.startswith(("400", "404", "413", "422"))
            raise SyncError(f"{name}: {message}", permanent=permanent) from exc

    def append_events(self, events: list[dict[str, Any]]) -> dict[str, int]:
        result = self._call("mutation", "production:appendEvents", {"events": events})
        return {"inserted": int(result["inserted"]), "duplicates": int(result["duplicates"])}

    def upsert_session(self, session: dict[str, Any]) -> None:
        self._call("mutation", "production:upsertSession", session)

    def session_timeline(self, session_id: str, after_seq: int | None = None) -> list[Any]:
        args: dict[str, Any] = {"sessionId": session_id}
        if after_seq is not None:
            args["afterSeq"] = float(after_seq)
        return list(self._call("query", "production:sessionTimeline", args))

    def session_summary(self, session_id: str) -> Any:
        return self._call("query", "production:sessionSummary", {"sessionId": session_id})
