"""SMPP 3.4 PDU codec: `Type.parse(data)` and `bytes(pdu)`, plus a strict stream framer.

Every PDU is a frozen, slotted dataclass. The body layout of each type is declared on
its fields (kind, maximum size, the command_status a bad value deserves), so the
codec is one loop instead of one hand-written parser per PDU (SMPP 3.4 §4). That loop
is the checked path and the reference; relay/sms/_codegen.py compiles each layout into
a fast path for well-formed PDUs that defers to it for anything it would have to judge.

Errors split as in h11: `SmppError` is *remote* (the peer sent bytes we refuse; it
carries the command_status to answer with), `LocalSmppError` is *local* (we tried to
encode a value that SMPP cannot carry).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from typing import Any, ClassVar, Self, dataclass_transform

from relay.sms import constants as c
from relay.sms._codegen import CSTR, SM, TIME, U8, Layout, compile_pdu

HEADER = struct.Struct(">IIII")
HEADER_SIZE = 16
# SMPP 3.4 sets no upper bound; a short_message is at most 254 octets and a
# message_payload at most 64 KiB (§5.3.2.32), so a PDU beyond this is refused.
MAX_PDU_SIZE = 64 * 1024 + 1024
MAX_SEQUENCE = 0x7FFFFFFF


class SmppError(Exception):
    """A remote error: the peer's bytes are refused with `command_status`.

    `command_id` and `sequence` are those of the offending PDU when known (so the
    session can answer with the matching response or a generic_nack); `fatal` means
    the stream framing is lost and the connection must be closed (SMPP 3.4 §3.3).
    """

    def __init__(
        self,
        command_status: int,
        detail: str,
        *,
        sequence: int = 0,
        command_id: int | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(f"{detail} (command_status=0x{command_status:08X})")
        self.command_status = command_status
        self.detail = detail
        self.sequence = sequence
        self.command_id = command_id
        self.fatal = fatal


class LocalSmppError(ValueError):
    """A local error: we asked the codec or the session for something SMPP forbids."""


@dataclass(frozen=True, slots=True)
class Tlv:
    """An optional parameter (SMPP 3.4 §3.2.4.1): 16-bit tag, 16-bit length, value."""

    tag: int
    value: bytes

    @classmethod
    def u8(cls, tag: int, value: int) -> Tlv:
        """A one-octet integer TLV."""
        return cls(tag, value.to_bytes(1, "big"))

    @classmethod
    def u16(cls, tag: int, value: int) -> Tlv:
        """A two-octet integer TLV."""
        return cls(tag, value.to_bytes(2, "big"))

    @classmethod
    def cstring(cls, tag: int, value: str) -> Tlv:
        """A C-Octet string TLV (NUL terminated)."""
        return cls(tag, value.encode("ascii") + b"\x00")

    def as_int(self) -> int:
        """The value as a big-endian integer."""
        return int.from_bytes(self.value, "big")

    def as_str(self) -> str:
        """The value as a C-Octet string without its NUL."""
        return self.value.rstrip(b"\x00").decode("ascii", "replace")


# Known TLVs with a fixed value length (SMPP 3.4 §5.3.2). A wrong length is
# ESME_RINVPARLEN; unknown tags are kept raw, as §3.2.4 tells receivers to ignore them.
_TLV_FIXED_LENGTH: dict[int, int] = {
    c.TAG_DEST_ADDR_SUBUNIT: 1,
    c.TAG_DEST_NETWORK_TYPE: 1,
    c.TAG_SOURCE_NETWORK_TYPE: 1,
    c.TAG_QOS_TIME_TO_LIVE: 4,
    c.TAG_PAYLOAD_TYPE: 1,
    c.TAG_PRIVACY_INDICATOR: 1,
    c.TAG_USER_MESSAGE_REFERENCE: 2,
    c.TAG_USER_RESPONSE_CODE: 1,
    c.TAG_SOURCE_PORT: 2,
    c.TAG_DESTINATION_PORT: 2,
    c.TAG_SAR_MSG_REF_NUM: 2,
    c.TAG_LANGUAGE_INDICATOR: 1,
    c.TAG_SAR_TOTAL_SEGMENTS: 1,
    c.TAG_SAR_SEGMENT_SEQNUM: 1,
    c.TAG_SC_INTERFACE_VERSION: 1,
    c.TAG_DPF_RESULT: 1,
    c.TAG_SET_DPF: 1,
    c.TAG_MS_AVAILABILITY_STATUS: 1,
    c.TAG_NETWORK_ERROR_CODE: 3,
    c.TAG_DELIVERY_FAILURE_REASON: 1,
    c.TAG_MORE_MESSAGES_TO_SEND: 1,
    c.TAG_MESSAGE_STATE: 1,
}
# receipted_message_id is a C-Octet string of 1..65 octets (§5.3.2.12).
_TLV_MAX_LENGTH: dict[int, int] = {
    c.TAG_RECEIPTED_MESSAGE_ID: 65,
    c.TAG_ADDITIONAL_STATUS_INFO_TEXT: 256,
    c.TAG_MESSAGE_PAYLOAD: 64 * 1024,
}


# Field kinds of a PDU body (SMPP 3.4 §3.1): CSTR, TIME, U8, SM (see _codegen.py).
def _cstr(size: int, status: int = c.ESME_RINVCMDLEN) -> Any:
    """A C-Octet string field of at most `size` octets including its NUL."""
    return field(default="", metadata={"kind": CSTR, "size": size, "status": status})


def _time(status: int) -> Any:
    """An absolute or relative time field, SMPP 3.4 §7.1 (NULL or 16 characters + NUL)."""
    return field(default="", metadata={"kind": TIME, "size": 17, "status": status})


def _u8(default: int = 0) -> Any:
    """A one-octet integer field."""
    return field(default=default, metadata={"kind": U8})


def _sm() -> Any:
    """sm_length + short_message, SMPP 3.4 §4.4.1: 0..254 octets."""
    return field(default=b"", metadata={"kind": SM})


class Pdu:
    """Base of every PDU: the header fields live on each subclass as dataclass fields."""

    __slots__ = ()
    command_id: ClassVar[int]
    has_tlvs: ClassVar[bool]
    layout: ClassVar[Layout]
    # Generated per type (relay/sms/_codegen.py): the fast encoder and body parser
    # (None: take the checked path, which raises the exact error).
    _encode: Callable[[], bytes | None]
    _decode: ClassVar[Callable[[bytes, int, int], Pdu | None]]
    # SMPP 3.4 §4.4.2 etc.: some responses may carry no body when command_status != 0.
    # Such a response is parsed with or without its body, but always sent with it (an
    # empty message_id is one NUL): gateways such as Kannel warn on every bodiless one,
    # and many SMSCs send the body.
    empty_body_on_error: ClassVar[bool] = False

    sequence: int
    command_status: int
    tlvs: tuple[Tlv, ...]

    @property
    def is_response(self) -> bool:
        """True for a *_resp or generic_nack."""
        return bool(self.command_id & c.RESPONSE_BIT)

    def tlv(self, tag: int) -> Tlv | None:
        """The first TLV with `tag`, or None."""
        for t in self.tlvs:
            if t.tag == tag:
                return t
        return None

    def __bytes__(self) -> bytes:
        """Encode the whole PDU, header included."""
        data = self._encode()  # the fast path; None if any value needs a closer look
        if data is not None:
            return data
        return self._encode_checked()

    def _encode_checked(self) -> bytes:
        body = bytearray()
        for name, kind, size, _status in self.layout:
            _encode_field(body, name, kind, size, getattr(self, name))
        if self.tlvs and not self.has_tlvs:
            raise LocalSmppError(f"{type(self).__name__} carries no TLVs in SMPP 3.4")
        for t in self.tlvs:
            if len(t.value) > 0xFFFF:
                raise LocalSmppError(f"TLV 0x{t.tag:04X} longer than 65535 octets")
            body += _TLV_HEADER.pack(t.tag, len(t.value)) + t.value
        length = HEADER_SIZE + len(body)
        if length > MAX_PDU_SIZE:
            raise LocalSmppError(f"PDU of {length} octets exceeds {MAX_PDU_SIZE}")
        # §5.1.4 allocates 1..0x7FFFFFFF, but an answer must echo whatever the peer
        # used, so the codec carries any 32-bit value; the session allocates in range.
        if not 0 <= self.sequence <= 0xFFFFFFFF:
            raise LocalSmppError(f"sequence {self.sequence} does not fit 32 bits")
        return HEADER.pack(length, self.command_id, self.command_status, self.sequence) + body

    def with_sequence(self, sequence: int) -> Self:
        """A copy carrying `sequence` (what `dataclasses.replace` does, without its cost).

        The session stamps every request it sends with a fresh sequence number, so this
        is on the per-message path. Each PDU type gets its own (relay/sms/_codegen.py).
        """
        return dataclasses.replace(self, sequence=sequence)  # type: ignore[type-var]

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Decode one complete PDU of this type; raise SmppError if it is not exact."""
        pdu = parse_pdu(data)
        if not isinstance(pdu, cls):
            raise SmppError(c.ESME_RINVCMDID, f"not a {cls.__name__}", sequence=pdu.sequence)
        return pdu


def _encode_field(out: bytearray, name: str, kind: str, size: int, value: Any) -> None:
    if kind == U8:
        if not 0 <= value <= 0xFF:
            raise LocalSmppError(f"{name}={value} does not fit one octet")
        out.append(value)
    elif kind == SM:
        if len(value) > 254:
            raise LocalSmppError("short_message over 254 octets (§4.4.1): use message_payload")
        out.append(len(value))
        out += value
    else:
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise LocalSmppError(f"{name} must be ASCII") from None
        if b"\x00" in raw or len(raw) + 1 > size:
            raise LocalSmppError(f"{name} must be ASCII of at most {size - 1} characters")
        if kind == TIME and len(raw) not in (0, 16):
            raise LocalSmppError(f"{name} must be empty or 16 characters (§7.1)")
        out += raw + b"\x00"


_TLV_HEADER = struct.Struct(">HH")


def _parse_tlvs(body: bytes, pos: int, end: int) -> tuple[Tlv, ...]:
    out: list[Tlv] = []
    while pos < end:
        if end - pos < 4:  # §3.2.4.1: every TLV has a 4-octet tag+length
            raise SmppError(c.ESME_RINVOPTPARSTREAM, "truncated TLV header")
        tag, length = _TLV_HEADER.unpack_from(body, pos)
        pos += 4
        if pos + length > end:
            raise SmppError(c.ESME_RINVOPTPARSTREAM, f"TLV 0x{tag:04X} runs past the PDU")
        fixed = _TLV_FIXED_LENGTH.get(tag)
        if fixed is not None and length != fixed:
            raise SmppError(c.ESME_RINVPARLEN, f"TLV 0x{tag:04X} length {length} != {fixed}")
        if length > _TLV_MAX_LENGTH.get(tag, 0xFFFF):
            raise SmppError(c.ESME_RINVPARLEN, f"TLV 0x{tag:04X} length {length} too long")
        out.append(Tlv(tag, body[pos : pos + length]))
        pos += length
    return tuple(out)


_REGISTRY: dict[int, type[Pdu]] = {}


@dataclass_transform(frozen_default=True, kw_only_default=True)
def _pdu(command_id: int, *, tlvs: bool = False, empty_on_error: bool = False) -> Any:
    """Class decorator: make a frozen slotted keyword-only dataclass and register it."""

    def wrap(cls: type) -> type:
        dc: Any = dataclass(frozen=True, slots=True, kw_only=True)(cls)
        dc.command_id = command_id
        dc.has_tlvs = tlvs
        dc.empty_body_on_error = empty_on_error
        dc.layout = tuple(
            (f.name, f.metadata["kind"], f.metadata.get("size", 0), f.metadata.get("status", 0))
            for f in dc_fields(dc)
            if "kind" in f.metadata
        )
        compile_pdu(dc, dc.layout, {"pack_header": HEADER.pack_into,
                                    "tlv_header": _TLV_HEADER.pack,
                                    "parse_tlvs": _parse_tlvs}, MAX_PDU_SIZE)
        _REGISTRY[command_id] = dc
        return dc

    return wrap


# ---- SMPP 3.4 §4.1: bind operations ----
@_pdu(c.BIND_TRANSMITTER)
class BindTransmitter(Pdu):
    """bind_transmitter, §4.1.1."""

    system_id: str = _cstr(16, c.ESME_RINVSYSID)
    password: str = _cstr(9, c.ESME_RINVPASWD)
    system_type: str = _cstr(13, c.ESME_RINVSYSTYP)
    interface_version: int = _u8(c.INTERFACE_VERSION_34)
    addr_ton: int = _u8()
    addr_npi: int = _u8()
    address_range: str = _cstr(41)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.BIND_RECEIVER)
class BindReceiver(Pdu):
    """bind_receiver, §4.1.3 (same body as bind_transmitter)."""

    system_id: str = _cstr(16, c.ESME_RINVSYSID)
    password: str = _cstr(9, c.ESME_RINVPASWD)
    system_type: str = _cstr(13, c.ESME_RINVSYSTYP)
    interface_version: int = _u8(c.INTERFACE_VERSION_34)
    addr_ton: int = _u8()
    addr_npi: int = _u8()
    address_range: str = _cstr(41)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.BIND_TRANSCEIVER)
class BindTransceiver(Pdu):
    """bind_transceiver, §4.1.5 (same body as bind_transmitter)."""

    system_id: str = _cstr(16, c.ESME_RINVSYSID)
    password: str = _cstr(9, c.ESME_RINVPASWD)
    system_type: str = _cstr(13, c.ESME_RINVSYSTYP)
    interface_version: int = _u8(c.INTERFACE_VERSION_34)
    addr_ton: int = _u8()
    addr_npi: int = _u8()
    address_range: str = _cstr(41)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


# §4.1.2/4.1.4/4.1.6: system_id + optional sc_interface_version. The body may be
# absent when command_status is non-zero, so parsing tolerates that.
@_pdu(c.BIND_TRANSMITTER_RESP, tlvs=True)
class BindTransmitterResp(Pdu):
    """bind_transmitter_resp, §4.1.2."""

    system_id: str = _cstr(16, c.ESME_RINVSYSID)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.BIND_RECEIVER_RESP, tlvs=True)
class BindReceiverResp(Pdu):
    """bind_receiver_resp, §4.1.4."""

    system_id: str = _cstr(16, c.ESME_RINVSYSID)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.BIND_TRANSCEIVER_RESP, tlvs=True)
class BindTransceiverResp(Pdu):
    """bind_transceiver_resp, §4.1.6."""

    system_id: str = _cstr(16, c.ESME_RINVSYSID)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.OUTBIND)
class Outbind(Pdu):
    """outbind, §4.1.7: the SMSC asks the ESME to bind_receiver."""

    system_id: str = _cstr(16, c.ESME_RINVSYSID)
    password: str = _cstr(9, c.ESME_RINVPASWD)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


# ---- §4.2, §4.3, §4.11: header-only PDUs ----
@_pdu(c.UNBIND)
class Unbind(Pdu):
    """unbind, §4.2.1."""

    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.UNBIND_RESP)
class UnbindResp(Pdu):
    """unbind_resp, §4.2.2."""

    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.GENERIC_NACK)
class GenericNack(Pdu):
    """generic_nack, §4.3.1: the answer to a PDU with a bad header."""

    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.ENQUIRE_LINK)
class EnquireLink(Pdu):
    """enquire_link, §4.11.1."""

    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.ENQUIRE_LINK_RESP)
class EnquireLinkResp(Pdu):
    """enquire_link_resp, §4.11.2."""

    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


# ---- §4.4 submit_sm and §4.6 deliver_sm share one body layout ----
@_pdu(c.SUBMIT_SM, tlvs=True)
class SubmitSm(Pdu):
    """submit_sm, §4.4.1."""

    service_type: str = _cstr(6, c.ESME_RINVSERTYP)
    source_addr_ton: int = _u8()
    source_addr_npi: int = _u8()
    source_addr: str = _cstr(21, c.ESME_RINVSRCADR)
    dest_addr_ton: int = _u8()
    dest_addr_npi: int = _u8()
    destination_addr: str = _cstr(21, c.ESME_RINVDSTADR)
    esm_class: int = _u8()
    protocol_id: int = _u8()
    priority_flag: int = _u8()
    schedule_delivery_time: str = _time(c.ESME_RINVSCHED)
    validity_period: str = _time(c.ESME_RINVEXPIRY)
    registered_delivery: int = _u8()
    replace_if_present_flag: int = _u8()
    data_coding: int = _u8()
    sm_default_msg_id: int = _u8()
    short_message: bytes = _sm()
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.SUBMIT_SM_RESP, empty_on_error=True)
class SubmitSmResp(Pdu):
    """submit_sm_resp, §4.4.2: no body when command_status is non-zero."""

    message_id: str = _cstr(65, c.ESME_RINVMSGID)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.DELIVER_SM, tlvs=True)
class DeliverSm(Pdu):
    """deliver_sm, §4.6.1 (schedule_delivery_time and validity_period are NULL)."""

    service_type: str = _cstr(6, c.ESME_RINVSERTYP)
    source_addr_ton: int = _u8()
    source_addr_npi: int = _u8()
    source_addr: str = _cstr(21, c.ESME_RINVSRCADR)
    dest_addr_ton: int = _u8()
    dest_addr_npi: int = _u8()
    destination_addr: str = _cstr(21, c.ESME_RINVDSTADR)
    esm_class: int = _u8()
    protocol_id: int = _u8()
    priority_flag: int = _u8()
    schedule_delivery_time: str = _time(c.ESME_RINVSCHED)
    validity_period: str = _time(c.ESME_RINVEXPIRY)
    registered_delivery: int = _u8()
    replace_if_present_flag: int = _u8()
    data_coding: int = _u8()
    sm_default_msg_id: int = _u8()
    short_message: bytes = _sm()
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.DELIVER_SM_RESP, empty_on_error=True)
class DeliverSmResp(Pdu):
    """deliver_sm_resp, §4.6.2: message_id is unused and set to NULL."""

    message_id: str = _cstr(65, c.ESME_RINVMSGID)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


# ---- §4.7 data_sm ----
@_pdu(c.DATA_SM, tlvs=True)
class DataSm(Pdu):
    """data_sm, §4.7.1: addresses up to 65 octets, text in message_payload."""

    service_type: str = _cstr(6, c.ESME_RINVSERTYP)
    source_addr_ton: int = _u8()
    source_addr_npi: int = _u8()
    source_addr: str = _cstr(65, c.ESME_RINVSRCADR)
    dest_addr_ton: int = _u8()
    dest_addr_npi: int = _u8()
    destination_addr: str = _cstr(65, c.ESME_RINVDSTADR)
    esm_class: int = _u8()
    registered_delivery: int = _u8()
    data_coding: int = _u8()
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.DATA_SM_RESP, tlvs=True)
class DataSmResp(Pdu):
    """data_sm_resp, §4.7.2."""

    message_id: str = _cstr(65, c.ESME_RINVMSGID)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


# ---- §4.8 query_sm and §4.9 cancel_sm ----
@_pdu(c.QUERY_SM)
class QuerySm(Pdu):
    """query_sm, §4.8.1."""

    message_id: str = _cstr(65, c.ESME_RINVMSGID)
    source_addr_ton: int = _u8()
    source_addr_npi: int = _u8()
    source_addr: str = _cstr(21, c.ESME_RINVSRCADR)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.QUERY_SM_RESP, empty_on_error=True)
class QuerySmResp(Pdu):
    """query_sm_resp, §4.8.2."""

    message_id: str = _cstr(65, c.ESME_RINVMSGID)
    final_date: str = _time(c.ESME_RQUERYFAIL)
    message_state: int = _u8()
    error_code: int = _u8()
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.CANCEL_SM)
class CancelSm(Pdu):
    """cancel_sm, §4.9.1."""

    service_type: str = _cstr(6, c.ESME_RINVSERTYP)
    message_id: str = _cstr(65, c.ESME_RINVMSGID)
    source_addr_ton: int = _u8()
    source_addr_npi: int = _u8()
    source_addr: str = _cstr(21, c.ESME_RINVSRCADR)
    dest_addr_ton: int = _u8()
    dest_addr_npi: int = _u8()
    destination_addr: str = _cstr(21, c.ESME_RINVDSTADR)
    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


@_pdu(c.CANCEL_SM_RESP)
class CancelSmResp(Pdu):
    """cancel_sm_resp, §4.9.2."""

    sequence: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()


BIND_REQUESTS: tuple[type[Pdu], ...] = (BindTransmitter, BindReceiver, BindTransceiver)


def response_class(command_id: int) -> Any:
    """The response type answering a request `command_id` (None if it has none)."""
    if command_id & c.RESPONSE_BIT:
        return None
    return _REGISTRY.get(command_id | c.RESPONSE_BIT)


def parse_pdu(data: bytes) -> Pdu:
    """Decode exactly one PDU from `data`; anything but an exact parse is an SmppError."""
    if len(data) < HEADER_SIZE:
        raise SmppError(c.ESME_RINVCMDLEN, "shorter than the 16-octet header", fatal=True)
    length, command_id, status, sequence = HEADER.unpack_from(data)
    if length != len(data):
        raise SmppError(
            c.ESME_RINVCMDLEN, f"command_length {length} != {len(data)} octets",
            sequence=sequence, command_id=command_id,
        )
    cls = _REGISTRY.get(command_id)
    if cls is None:
        raise SmppError(
            c.ESME_RINVCMDID, f"unknown command_id 0x{command_id:08X}",
            sequence=sequence, command_id=command_id,
        )
    try:
        return _parse_body(cls, bytes(data), status, sequence)
    except SmppError as exc:
        exc.sequence, exc.command_id = sequence, command_id
        raise


def _parse_body(cls: type[Pdu], body: bytes, status: int, sequence: int) -> Pdu:
    pdu = cls._decode(body, status, sequence)  # the fast path; None if anything is off
    return pdu if pdu is not None else _parse_body_checked(cls, body, status, sequence)


def _parse_body_checked(cls: type[Pdu], body: bytes, status: int, sequence: int) -> Pdu:
    # Offsets are absolute in the whole PDU: no slicing or copying until a value is cut.
    values: dict[str, Any] = {"sequence": sequence, "command_status": status}
    pos = HEADER_SIZE
    end = len(body)
    # An absent body is tolerated for error responses (§4.4.2 says so for submit_sm_resp;
    # SMSCs do the same for bind_*_resp and others).
    if cls.command_id & c.RESPONSE_BIT and status != c.ESME_ROK and pos == end:
        return cls(**values)
    for name, kind, size, err in cls.layout:
        if pos >= end:
            raise SmppError(c.ESME_RINVCMDLEN, f"body ends before {name}")
        if kind == U8:
            values[name] = body[pos]
            pos += 1
        elif kind == SM:
            sm_length = body[pos]
            if sm_length > 254:  # §5.2.21: 0..254
                raise SmppError(c.ESME_RINVMSGLEN, f"sm_length {sm_length} > 254")
            if pos + 1 + sm_length > end:
                raise SmppError(c.ESME_RINVCMDLEN, "short_message runs past command_length")
            values[name] = body[pos + 1 : pos + 1 + sm_length]
            pos += 1 + sm_length
        else:
            values[name], pos = _parse_cstr(body, pos, end, name, kind, size, err)
    if pos < end:
        if not cls.has_tlvs:
            raise SmppError(c.ESME_RINVCMDLEN, f"{end - pos} octets after the body")
        values["tlvs"] = _parse_tlvs(body, pos, end)
    return cls(**values)


def _parse_cstr(
    body: bytes, pos: int, end: int, name: str, kind: str, size: int, err: int
) -> tuple[str, int]:
    # §3.1: a C-Octet String of max size N holds at most N-1 characters and a NUL.
    limit = min(end, pos + size)
    nul = body.find(b"\x00", pos, limit) - pos
    if nul < 0:
        if limit == end and end - pos < size:
            raise SmppError(c.ESME_RINVCMDLEN, f"{name} has no NUL before the end")
        raise SmppError(err, f"{name} longer than {size - 1} characters")
    if kind == TIME and nul not in (0, 16):  # §7.1: NULL or exactly 16 characters
        raise SmppError(err, f"{name} is {nul} characters, not 0 or 16")
    try:
        text = body[pos : pos + nul].decode("ascii")
    except UnicodeDecodeError:
        raise SmppError(err, f"{name} is not ASCII") from None
    return text, pos + nul + 1


class PduFramer:
    """Cuts a TCP byte stream into PDUs by command_length (SMPP 3.4 §3.2).

    `feed` returns parsed PDUs and SmppError values in arrival order. A PDU whose
    length is sane but whose body is bad is skipped and reported; a length below 16
    or above `max_size` loses the framing: a fatal SmppError, after which the framer
    refuses all further input (never a guess at where the next PDU starts).
    """

    def __init__(self, max_size: int = MAX_PDU_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_size
        self.broken = False

    def feed(self, data: bytes) -> list[Pdu | SmppError]:
        """Add bytes from the peer; return every complete PDU (or error) found."""
        out: list[Pdu | SmppError] = []
        if self.broken:
            return out
        self._buf += data
        buf = self._buf
        start = 0
        while len(buf) - start >= 4:
            (length,) = struct.unpack_from(">I", buf, start)
            if length < HEADER_SIZE or length > self._max:
                seq = 0
                cmd = None
                if len(buf) - start >= HEADER_SIZE:
                    _, cmd, _, seq = HEADER.unpack_from(buf, start)
                out.append(SmppError(
                    c.ESME_RINVCMDLEN, f"command_length {length} outside 16..{self._max}",
                    sequence=seq, command_id=cmd, fatal=True,
                ))
                self.broken = True
                start = len(buf)
                break
            if len(buf) - start < length:
                break
            chunk = bytes(buf[start : start + length])
            start += length
            try:
                out.append(parse_pdu(chunk))
            except SmppError as exc:
                out.append(exc)
        del buf[:start]
        return out

    @property
    def buffered(self) -> int:
        """Octets held waiting for the rest of a PDU."""
        return len(self._buf)
