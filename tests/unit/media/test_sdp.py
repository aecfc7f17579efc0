"""SDP codec round trips and the B2BUA rewrite (relay/sdp.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sdp import (
    LocalMedia,
    NoCommonCodec,
    RelayOrigin,
    SdpError,
    SessionDescription,
    local_answer,
    local_offer,
    remote_media,
    rewrite_for_peer,
)


def crlf(text: str) -> bytes:
    return "".join(line + "\r\n" for line in text.strip().splitlines()).encode()


# SIPp's built-in uac scenario body, with its [keywords] substituted.
SIPP = crlf("""
v=0
o=user1 53655765 2353687637 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
""")

# A baresip offer: many codecs, ICE, a=rtcp, a video stream.
BARESIP = crlf("""
v=0
o=- 1414471423 1414471423 IN IP4 10.0.0.15
s=baresip
p=+86 138 0000 0001
e=alice@example.com
c=IN IP4 10.0.0.15
t=0 0
a=tool:baresip 1.0.0
a=ice-lite
m=audio 10350 RTP/AVP 96 97 98 9 0 8 101
b=AS:64
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:97 speex/16000
a=rtpmap:98 G7221/16000
a=fmtp:98 bitrate=32000
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp:10351
a=sendrecv
a=label:1
a=ptime:20
a=ice-ufrag:Xy3p
a=ice-pwd:dk2ndk2kd94kvms03kv9f
a=candidate:1 1 UDP 2113937151 10.0.0.15 10350 typ host
a=candidate:1 2 UDP 2113937150 10.0.0.15 10351 typ host
a=candidate:2 1 UDP 1845501695 203.0.113.77 41234 typ srflx raddr 10.0.0.15 rport 10350
m=video 10352 RTP/AVP 100
c=IN IP4 10.0.0.15
a=rtpmap:100 H264/90000
""")

# A re-INVITE putting the other side on hold, RFC 2543 style plus a=sendonly.
HOLD = crlf("""
v=0
o=- 1414471423 1414471424 IN IP4 10.0.0.15
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 10350 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendonly
""")


@pytest.mark.parametrize("body", [SIPP, BARESIP, HOLD], ids=["sipp", "baresip", "hold"])
def test_round_trip_is_byte_exact(body: bytes) -> None:
    assert bytes(SessionDescription.parse(body)) == body
    assert str(SessionDescription.parse(body.decode())) == body.decode()


def test_parse_views() -> None:
    sdp = SessionDescription.parse(BARESIP)
    assert sdp.origin.sess_id == 1414471423 and sdp.origin.address == "10.0.0.15"
    assert sdp.connection is not None and sdp.connection.address == "10.0.0.15"
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 10350, "RTP/AVP")
    assert audio.formats == ["96", "97", "98", "9", "0", "8", "101"]
    assert audio.rtpmap["101"] == "telephone-event/8000"
    assert audio.fmtp["101"] == "0-15"
    assert audio.rtcp == (10351, None)
    assert audio.direction == "sendrecv"
    assert video.port == 10352 and video.connection is not None


def test_lf_only_and_missing_final_newline_are_accepted() -> None:
    text = SIPP.decode().replace("\r\n", "\n").rstrip("\n")
    assert bytes(SessionDescription.parse(text)) == SIPP


@pytest.mark.parametrize(("body", "message"), [
    (b"", "empty SDP"),
    (b"o=- 1 1 IN IP4 1.2.3.4\r\n", "must start with v=0"),
    (b"v=0\r\ns=-\r\n", "o= must follow v="),
    (b"v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", "malformed o= line"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nthis is not sdp\r\n", "not <type>=<value>"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 0\r\n",
     "out of range"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP\r\n",
     "m= line without formats"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio port RTP/AVP 0\r\n",
     "malformed m= line"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n", "no c= line"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\nm=audio 5000 RTP/AVP 0\r\n",
     "malformed c= line"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n"
     b"a=rtcp:abc\r\n", "malformed a=rtcp"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0 300\r\n",
     "bad RTP payload type"),
    (b"v=0\r\no=- 1 1 IN IP4 \xff\r\n", "not UTF-8"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\no=- 2 2 IN IP4 10.0.0.1\r\n", "repeated o="),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=a\rb\r\n", "not <type>=<value>"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP \xc2\xb2\r\n",
     "bad RTP payload type"),
])
def test_malformed_sdp_is_a_400(body: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message) as info:
        SessionDescription.parse(body)
    assert info.value.status == 400


def rewrite(body: bytes, origin: RelayOrigin | None = None, port: int = 30000) -> bytes:
    return bytes(rewrite_for_peer(SessionDescription.parse(body), relay_address="198.51.100.9",
                                  relay_port=port, origin=origin or RelayOrigin(777, 1)))


def test_rewrite_hides_every_original_address_port_and_identity() -> None:
    out = rewrite(BARESIP)
    text = out.decode()
    for secret in ("10.0.0.15", "203.0.113.77", "10350", "10351", "10352", "41234",
                   "1414471423", "Xy3p", "dk2ndk2kd94kvms03kv9f", "138 0000",
                   "alice@example.com", "baresip"):
        assert secret not in text, secret
    sdp = SessionDescription.parse(out)
    assert str(sdp.origin) == "- 777 1 IN IP4 198.51.100.9"
    assert sdp.connection is not None and sdp.connection.address == "198.51.100.9"
    audio, video = sdp.media
    assert audio.port == 30000 and audio.rtcp == (30001, None)
    assert not audio.attributes("candidate") and not audio.attributes("ice-ufrag")
    assert not sdp.media[0].attributes("ice-pwd") and "ice-lite" not in text
    # RFC 3264 §6: the video m= line stays, disabled with port 0, nothing else.
    assert (video.media, video.port, video.lines) == ("video", 0, [])


def test_rewrite_filters_codecs_to_g711_and_telephone_event() -> None:
    audio = SessionDescription.parse(rewrite(BARESIP)).media[0]
    assert audio.formats == ["0", "8", "101"]
    assert set(audio.rtpmap) == {"0", "8", "101"}
    assert audio.fmtp == {"101": "0-15"}
    assert audio.attributes("ptime") == ["20"]  # whitelisted media attributes survive
    assert audio.attributes("label") == []  # unknown ones do not (they may carry anything)


def test_telephone_event_must_share_the_8khz_clock() -> None:
    wideband = BARESIP.replace(b"a=rtpmap:101 telephone-event/8000",
                               b"a=rtpmap:101 telephone-event/48000")
    assert SessionDescription.parse(rewrite(wideband)).media[0].formats == ["0", "8"]


def test_rewrite_sipp_body() -> None:
    out = rewrite(SIPP, port=40002)
    assert b"192.168.1.20" not in out and b"6000" not in out and b"user1" not in out
    assert SessionDescription.parse(out).media[0].formats == ["0"]
    assert b"m=audio 40002 RTP/AVP 0\r\n" in out


def test_hold_is_carried_across() -> None:
    out = SessionDescription.parse(rewrite(HOLD))
    assert out.connection is not None and out.connection.address == "0.0.0.0"
    assert out.media[0].direction == "sendonly"
    assert remote_media(SessionDescription.parse(HOLD)).address is None
    inactive = HOLD.replace(b"c=IN IP4 0.0.0.0", b"c=IN IP4 10.0.0.15").replace(
        b"a=sendonly", b"a=inactive")
    out2 = SessionDescription.parse(rewrite(inactive))
    assert out2.media[0].direction == "inactive"
    assert out2.connection is not None and out2.connection.address == "198.51.100.9"


def test_origin_version_moves_only_when_the_body_changes() -> None:
    """RFC 3264 §8: a new offer increments o= version; the same SDP keeps it."""
    origin = RelayOrigin(4242, 5)
    first = SessionDescription.parse(rewrite(SIPP, origin)).origin
    again = SessionDescription.parse(rewrite(SIPP, origin)).origin
    held = SessionDescription.parse(rewrite(HOLD, origin)).origin
    assert (first.sess_id, first.sess_version) == (4242, 5)
    assert again.sess_version == 5
    assert (held.sess_id, held.sess_version) == (4242, 6)


def test_no_common_codec_is_a_488() -> None:
    opus_only = crlf("""
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 4000 RTP/AVP 96 101
a=rtpmap:96 opus/48000/2
a=rtpmap:101 telephone-event/8000
""")
    with pytest.raises(NoCommonCodec) as info:
        rewrite(opus_only)
    assert info.value.status == 488
    with pytest.raises(NoCommonCodec):
        remote_media(SessionDescription.parse(opus_only))
    srtp = SIPP.replace(b"RTP/AVP", b"RTP/SAVP")
    with pytest.raises(NoCommonCodec):
        rewrite(srtp)


def test_remote_media_reads_the_peer_address() -> None:
    rm = remote_media(SessionDescription.parse(BARESIP))
    assert (rm.address, rm.rtp_port, rm.rtcp_port) == ("10.0.0.15", 10350, 10351)
    assert rm.payload_types == (0, 8, 101) and rm.codec == "PCMU"
    assert rm.direction == "sendrecv"


def test_media_level_connection_and_ipv6_relay() -> None:
    body = crlf("""
v=0
o=- 5 5 IN IP6 2001:db8::5
s=-
t=0 0
m=audio 7000 RTP/AVP 8
c=IN IP6 2001:db8::5
a=rtcp:7005 IN IP6 2001:db8::6
""")
    assert remote_media(SessionDescription.parse(body)).rtcp_address == "2001:db8::6"
    out = bytes(rewrite_for_peer(SessionDescription.parse(body), relay_address="2001:db8::99",
                                 relay_port=32000, origin=RelayOrigin(1, 1)))
    assert b"2001:db8::5" not in out and b"2001:db8::6" not in out
    assert b"c=IN IP6 2001:db8::99\r\n" in out and b"a=rtcp:32001\r\n" in out


@given(st.text(max_size=300))
def test_parse_of_any_text_fails_only_with_sdp_error(text: str) -> None:
    try:
        SessionDescription.parse(text)
    except SdpError:
        return


BARESIP_LINES = BARESIP.decode().split("\r\n")[:-1]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(BARESIP_LINES), max_size=40), st.sampled_from(["\r\n", "\n"]))
def test_shuffled_real_lines_parse_and_rewrite_without_leaks(lines: list[str], eol: str) -> None:
    """Whatever survives parsing is rewritten without leaking, or refused as 488."""
    body = "v=0\r\no=- 1414471423 1 IN IP4 10.0.0.15\r\n" + "".join(x + eol for x in lines)
    try:
        sdp = SessionDescription.parse(body)
    except SdpError:
        return
    assert bytes(sdp) == body.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    try:
        out = rewrite(body.encode())
    except NoCommonCodec:
        return
    text = out.decode()
    for secret in ("10.0.0.15", "203.0.113.77", "10350", "1414471423", "baresip"):
        assert secret not in text
    SessionDescription.parse(out)


# --- the relay's own answer and offer (prompts and digits before a callee exists) ---


def _offer(formats: str, extra: str = "", direction: str = "sendrecv") -> SessionDescription:
    lines = ["v=0", "o=alice 7 7 IN IP4 10.0.0.1", "s=call", "c=IN IP4 10.0.0.1", "t=0 0",
             f"m=audio 4000 RTP/AVP {formats}", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:8 PCMA/8000", "a=rtpmap:96 opus/48000/2",
             "a=rtpmap:100 telephone-event/8000", "a=fmtp:100 0-16", f"a={direction}"]
    if extra:
        lines.append(extra)
    return SessionDescription.parse(("\r\n".join(lines) + "\r\n").encode())


def test_local_answer_takes_pcmu_and_telephone_event_and_refuses_other_streams() -> None:
    offer = _offer("96 8 0 100", "m=video 5000 RTP/AVP 97")
    origin = RelayOrigin(55, 1)
    answer, media = local_answer(offer, relay_address="192.0.2.1", relay_port=30000,
                                 origin=origin)
    assert media == LocalMedia("PCMU", 0, 100)
    assert str(answer) == (
        "v=0\r\no=- 55 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 100\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-15\r\na=ptime:20\r\n"
        "a=sendrecv\r\nm=video 0 RTP/AVP 97\r\n")


def test_local_answer_falls_back_to_pcma_mirrors_direction_and_refuses_no_g711() -> None:
    answer, media = local_answer(_offer("8", direction="sendonly"), relay_address="192.0.2.1",
                                 relay_port=30000, origin=RelayOrigin(1, 1))
    assert media == LocalMedia("PCMA", 8, None)
    assert answer.media[0].formats == ["8"] and answer.media[0].direction == "recvonly"
    with pytest.raises(NoCommonCodec) as exc:
        local_answer(_offer("96"), relay_address="192.0.2.1", relay_port=1,
                     origin=RelayOrigin(1, 1))
    assert exc.value.status == 488


def test_local_offer_carries_the_settled_codec_and_a_new_version() -> None:
    origin = RelayOrigin(9, 1)
    # What the relay stamped toward this side before (the caller's offer, rewritten).
    rewrite_for_peer(_offer("0 8 100"), relay_address="192.0.2.1", relay_port=30002,
                     origin=origin)
    offer = local_offer(LocalMedia("PCMU", 0, 100), relay_address="192.0.2.1",
                        relay_port=30002, origin=origin)
    assert offer.origin.sess_id == 9 and offer.origin.sess_version == 2
    md = offer.media[0]
    assert (md.port, md.formats, md.direction) == (30002, ["0", "100"], "sendrecv")
    assert md.rtpmap == {"0": "PCMU/8000", "100": "telephone-event/8000"}
    again = local_offer(LocalMedia("PCMU", 0, 100), relay_address="192.0.2.1",
                        relay_port=30002, origin=origin)
    assert again.origin.sess_version == 2  # RFC 3264 §8: unchanged SDP, same version
