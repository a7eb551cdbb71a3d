"""What the relay checks in an SDP offer before handing it to aiortc, and reads from answers.

aiortc's own parser accepts a lot and fails late with messages meant for its developers; the
checks here give the camera or the browser a reason it can act on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

MAX_SDP_BYTES = 64 * 1024
SDP_TYPE = "application/sdp"
VIDEO_CODECS = ("VP8", "H264")


class BadOffer(ValueError):
    """The offer cannot be answered; the message says why (400)."""


class OfferTooLarge(ValueError):
    """The body is larger than any offer (413)."""


def offer_body(request: HttpRequest) -> bytes:
    """The request's body, refused when it is larger than an offer can be: by its declared
    length before reading, or as read (Django refuses past DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    limit = f"an SDP offer is at most {MAX_SDP_BYTES // 1024} KB"
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_SDP_BYTES:
        raise OfferTooLarge(f"The body is {declared} bytes; {limit}.")
    try:
        body = request.body
    except RequestDataTooBig:
        raise OfferTooLarge(f"The body is larger than the server takes; {limit}.") from None
    if len(body) > MAX_SDP_BYTES:
        raise OfferTooLarge(f"The body is {len(body)} bytes; {limit}.")
    return body


def offer_text(body: bytes, *, want: str) -> str:
    """The offer as text, checked for what every WHIP/WHEP offer must have. `want` is the
    direction the relay needs from the peer: "send" (a publisher) or "recv" (a viewer)."""
    if not body.strip():
        raise BadOffer("The body is empty; send the SDP offer as application/sdp.")
    if len(body) > MAX_SDP_BYTES:
        raise BadOffer(f"The offer is larger than {MAX_SDP_BYTES // 1024} KB.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadOffer("The offer is not UTF-8 text.") from None
    if not text.lstrip().startswith("v=0"):
        raise BadOffer("This is not an SDP offer: it must start with v=0.")
    video = [m for m in _media_sections(text) if m[0].startswith("m=video ")]
    if not video:
        raise BadOffer("The offer has no video (m=video) section.")
    directions = {_direction(section) for section in video}
    usable = {"sendonly", "sendrecv"} if want == "send" else {"recvonly", "sendrecv"}
    if not directions & usable:
        raise BadOffer(
            "The offer's video is "
            + ", ".join(sorted(directions))
            + (
                "; a publish must send video (sendonly)."
                if want == "send"
                else "; a viewer must receive video (recvonly)."
            )
        )
    names = {name.upper() for section in video for name in _codec_names(section)}
    if not names & set(VIDEO_CODECS):
        offered = ", ".join(sorted(names)) or "none"
        raise BadOffer(f"The offer's video codecs ({offered}) include neither VP8 nor H.264.")
    return text


def answer_codec(sdp: str) -> str:
    """The video codec an answer settled on: the first format of its video section."""
    for section in _media_sections(sdp):
        head = section[0].split()
        if head[0] != "m=video" or len(head) < 4:
            continue
        first = head[3]
        for line in section:
            match = re.match(rf"a=rtpmap:{first} ([^/]+)/", line)
            if match:
                return match.group(1).upper()
    return ""


def prefer_codec(transceiver: RTCRtpTransceiver, name: str) -> None:
    """Put `name` (vp8 or h264) first among the transceiver's video codecs."""
    if not name:
        return
    wanted = f"video/{name}".lower()
    codecs = RTCRtpSender.getCapabilities("video").codecs
    first = [c for c in codecs if c.mimeType.lower() == wanted]
    if first:
        rest = [c for c in codecs if c.mimeType.lower() != wanted]
        transceiver.setCodecPreferences(first + rest)


def ice_servers(ice_servers_json: str) -> list[dict[str, Any]]:
    """MOTIONMIX_ICE_SERVERS (a JSON list; empty by default), checked: each entry has `urls`.

    The relay's peers and the operators' browsers use the same list: a TURN server that only
    one side knew would leave the other side without the relayed candidates it needs."""
    try:
        entries = json.loads(ice_servers_json or "[]")
    except json.JSONDecodeError as exc:
        raise ValueError(f"MOTIONMIX_ICE_SERVERS is not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError("MOTIONMIX_ICE_SERVERS must be a JSON list of ICE servers.")
    servers: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict) or "urls" not in entry:
            raise ValueError("Each ICE server needs `urls` (and, for TURN, username/credential).")
        keep = {key: entry[key] for key in ("urls", "username", "credential") if key in entry}
        servers.append(keep)
    return servers


def rtc_configuration(ice_servers_json: str) -> RTCConfiguration:
    """The relay's peers' configuration from MOTIONMIX_ICE_SERVERS."""
    servers = [
        RTCIceServer(
            urls=entry["urls"],
            username=entry.get("username"),
            credential=entry.get("credential"),
        )
        for entry in ice_servers(ice_servers_json)
    ]
    return RTCConfiguration(iceServers=servers)


def _media_sections(text: str) -> list[list[str]]:
    sections: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    return sections


def _direction(section: list[str]) -> str:
    for line in section:
        if line in ("a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive"):
            return line[2:]
    return "sendrecv"


def _codec_names(section: list[str]) -> list[str]:
    return [
        match.group(1)
        for line in section
        if (match := re.match(r"a=rtpmap:\d+ ([^/]+)/", line)) is not None
    ]
