"""What the relay checks in offers before aiortc sees them, and its peers' configuration."""

from __future__ import annotations

import pytest

from director.hero.sdp import BadOffer, answer_codec, offer_text, rtc_configuration

VIDEO = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


def _offer(direction: str, *codecs: str) -> bytes:
    formats = " ".join(str(96 + i) for i in range(len(codecs)))
    lines = [f"m=video 9 UDP/TLS/RTP/SAVPF {formats}", f"a={direction}"]
    lines += [f"a=rtpmap:{96 + i} {codec}/90000" for i, codec in enumerate(codecs)]
    return (VIDEO + "\r\n".join(lines) + "\r\n").encode()


def test_a_publishers_offer_must_send_video_in_vp8_or_h264() -> None:
    assert offer_text(_offer("sendonly", "VP8", "H264"), want="send").startswith("v=0")
    assert offer_text(_offer("sendrecv", "H264"), want="send")
    with pytest.raises(BadOffer, match="must send video"):
        offer_text(_offer("recvonly", "VP8"), want="send")
    with pytest.raises(BadOffer, match=r"\(AV1, VP9\) include neither"):
        offer_text(_offer("sendonly", "VP9", "AV1"), want="send")


def test_a_viewers_offer_must_receive_video() -> None:
    assert offer_text(_offer("recvonly", "VP8"), want="recv")
    with pytest.raises(BadOffer, match="must receive video"):
        offer_text(_offer("sendonly", "VP8"), want="recv")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"   \r\n", "empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"hello", "must start with v=0"),
        (VIDEO.encode(), "no video"),
        (b"v=0\r\n" + b"a=x\r\n" * 20_000, "larger than 64 KB"),
    ],
)
def test_malformed_offers_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadOffer, match=reason):
        offer_text(body, want="send")


def test_the_answers_codec_is_the_first_format_of_its_video_section() -> None:
    answer = (
        VIDEO + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 102 97\r\na=rtpmap:97 VP8/90000\r\n"
        "a=rtpmap:102 H264/90000\r\n"
    )
    assert answer_codec(answer) == "H264"
    assert answer_codec(VIDEO) == ""


def test_ice_servers_come_from_json_and_none_is_the_default() -> None:
    assert rtc_configuration("[]").iceServers == []
    assert rtc_configuration("").iceServers == []
    turn = rtc_configuration(
        '[{"urls": ["turn:turn.example:3478"], "username": "u", "credential": "c"}]'
    ).iceServers
    assert turn is not None
    assert turn[0].urls == ["turn:turn.example:3478"] and turn[0].username == "u"
    with pytest.raises(ValueError, match="not JSON"):
        rtc_configuration("[{")
    with pytest.raises(ValueError, match="JSON list"):
        rtc_configuration('{"urls": "stun:x"}')
    with pytest.raises(ValueError, match="needs `urls`"):
        rtc_configuration('[{"username": "u"}]')


async def test_the_output_counts_in_whole_frames_and_never_twice_in_one() -> None:
    import asyncio

    from devices.video_code import FrameCode, coded_frame
    from director.hero.tracks import FRAME_TICKS, FrameHub, HeroOutput

    hub = FrameHub("cam")
    output = HeroOutput("session")
    output.switch(hub)
    stamps = []
    for i in range(6):
        hub.put(coded_frame(320, 240, FrameCode(1, i)))
        stamps.append((await asyncio.wait_for(output.recv(), 1)).pts)
        if i == 2:
            await asyncio.sleep(0.1)  # a stall: the clock, not the count, sets the next stamp
    assert all(pts % FRAME_TICKS == 0 for pts in stamps)
    assert stamps == sorted(set(stamps))
    assert stamps[3] - stamps[2] >= 2 * FRAME_TICKS
    output.stop()


def test_a_viewers_copy_has_the_same_pixels_even_from_padded_rows() -> None:
    import fractions

    from aiortc.codecs import get_decoder, get_encoder
    from aiortc.codecs.vpx import vp8_depayload
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from devices.video_code import FrameCode, coded_frame, read
    from director.hero.tracks import frame_copy

    frame = coded_frame(320, 240, FrameCode(7, 1234))
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    payloads, timestamp = get_encoder(codec).encode(frame)
    data = b"".join(vp8_depayload(p) for p in payloads)
    (decoded,) = get_decoder(codec).decode(JitterFrame(data=data, timestamp=timestamp))
    # The decoder pads its rows; a new frame of the same size does not.
    assert decoded.planes[0].line_size > decoded.width
    for original in (frame, decoded):
        copy = frame_copy(original)
        assert copy is not original
        assert (copy.width, copy.height, copy.pts) == (
            original.width,
            original.height,
            original.pts,
        )
        assert read(copy) == FrameCode(7, 1234)
        assert bytes(copy.to_image().tobytes()) == bytes(original.to_image().tobytes())
