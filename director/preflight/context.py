"""What the checks of one run share: the deployment's URL, an operator's browser (an httpx
client that logs in on first use), and the server's own status report."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from director.preflight.runner import Failed

LOGIN_PATH = "/accounts/login/"
STATUS_PATH = "/preflight/status.json"
TIMEOUT_S = 10.0
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="(?P<token>[^"]+)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass
class Context:
    url: str
    run_id: str
    credentials: Credentials
    timeout_s: float = TIMEOUT_S
    _client: httpx.Client | None = None
    _logged_in: bool = False
    _login_error: str = ""
    _status: dict[str, Any] | None = None
    # Set by the journey: what it made, for the report and the cleanup.
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")

    @property
    def client(self) -> httpx.Client:
        """An anonymous browser until `operator()` logs it in."""
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.url, timeout=self.timeout_s, follow_redirects=False
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._logged_in = False

    def csrf_headers(self) -> dict[str, str]:
        """What a page's htmx post sends: the CSRF token, and a Referer for HTTPS."""
        return {
            "X-CSRFToken": self.client.cookies.get("csrftoken", ""),
            "Referer": self.url + "/",
            "HX-Request": "true",
        }

    def operator(self) -> httpx.Client:
        """The client, logged in as the run's operator (once; a failure is remembered)."""
        if self._logged_in:
            return self.client
        if self._login_error:
            raise Failed(self._login_error)
        try:
            page = self.client.get(LOGIN_PATH)
            match = _CSRF_INPUT.search(page.text)
            if page.status_code != 200 or match is None:
                raise Failed(f"the login page answered {page.status_code} without a login form")
            response = self.client.post(
                LOGIN_PATH,
                data={
                    "username": self.credentials.username,
                    "password": self.credentials.password,
                    "csrfmiddlewaretoken": match["token"],
                },
                headers={"Referer": self.url + LOGIN_PATH},
            )
        except httpx.HTTPError as exc:
            self._login_error = f"cannot reach {self.url} to log in ({exc})"
            raise Failed(self._login_error) from None
        except Failed as exc:
            self._login_error = str(exc)
            raise
        if response.status_code != 302 or LOGIN_PATH in response.headers.get("location", ""):
            self._login_error = (
                f"logging in as “{self.credentials.username}” answered "
                f"{response.status_code}: check the preflight login (docs/preflight.md)"
            )
            raise Failed(self._login_error)
        self._logged_in = True
        return self.client

    def server_status(self) -> dict[str, Any]:
        """The server's own report (its relay, its Convex), read once; needs staff."""
        if self._status is None:
            response = self.operator().get(STATUS_PATH)
            if response.status_code != 200:
                raise Failed(
                    f"{STATUS_PATH} answered {response.status_code}: the preflight login must be "
                    "staff"
                )
            self._status = response.json()
        return self._status

    def convex(self) -> tuple[str, str | None]:
        """Where to read Convex, and with which admin key: this process's CONVEX_URL (and its
        CONVEX_DEPLOY_KEY: None means the ledger's default), else the one the server uses
        and, for the embedded default's local bridge (started by `serve --ledger-bridge`,
        known only to the server), the bridge's key, which the server tells staff."""
        if settings.CONVEX_URL:
            return str(settings.CONVEX_URL), None
        try:
            status = self.server_status()
        except (Failed, httpx.HTTPError, ValueError):
            return "", None
        return str(status.get("convex_url") or ""), (status.get("convex_bridge_key") or None)
