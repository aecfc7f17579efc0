"""SIP dialogs (RFC 3261 §12): identity, CSeq spaces, route set and in-dialog requests.

A :class:`Dialog` is plain state; it builds in-dialog requests and checks incoming
ones, but sends nothing itself. Identifiers come from ``random_bytes`` (default
:data:`system_random`, the system CSPRNG read in blocks) so tests can make them
deterministic.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from enum import StrEnum

from .grammar import MAGIC_COOKIE, NameAddr, SipUri, parse_name_addr
from .message import Headers, SipRequest, SipResponse

__all__ = ["Dialog", "DialogState", "new_branch", "new_call_id", "new_random_pool", "new_tag",
           "system_random"]

RandomBytes = Callable[[int], bytes]


def new_random_pool(block: int = 4096) -> RandomBytes:
    """`os.urandom` read `block` bytes at a time, handed out in slices.

    Tags, branches and Call-IDs must be unguessable (a stranger who can predict them
    can forge in-dialog requests), so they come from the system CSPRNG as before; but
    a call needs about nine of them, and a `getrandom` system call each was 3% of the
    relay's CPU under load on a VM (py-spy, `loadtest sip`). A forked child starts
    with an empty pool (`register_at_fork`), so parent and child never share bytes.
    """
    buf = b""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal buf, pos
        end = pos + n
        if end > len(buf):
            buf, pos, end = os.urandom(max(block, n)), 0, n
        start, pos = pos, end
        return buf[start:end]

    def reset() -> None:
        nonlocal buf, pos
        buf, pos = b"", 0

    os.register_at_fork(after_in_child=reset)
    return take


#: The default source of identifiers (see new_random_pool).
system_random = new_random_pool()


def new_branch(random_bytes: RandomBytes = system_random) -> str:
    """A fresh RFC 3261 branch (§8.1.1.7: starts with the magic cookie)."""
    return MAGIC_COOKIE + random_bytes(10).hex()


def new_tag(random_bytes: RandomBytes = system_random) -> str:
    """A fresh From/To tag with at least 32 random bits (RFC 3261 §19.3)."""
    return random_bytes(8).hex()


def new_call_id(host: str, random_bytes: RandomBytes = system_random) -> str:
    """A fresh, globally unique Call-ID (RFC 3261 §8.1.1.4)."""
    return f"{random_bytes(12).hex()}@{host}"


class DialogState(StrEnum):
    """RFC 3261 §12: a dialog is early (1xx with tag) or confirmed (2xx)."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Dialog:
    """One side of a dialog, as UAC (we sent the INVITE) or UAS (we received it)."""

    def __init__(self, *, call_id: str, local_tag: str, remote_tag: str, local_uri: str,
                 remote_uri: str, local_seq: int, remote_seq: int | None,
                 remote_target: str, route_set: list[str], local_contact: str,
                 sent_by: str, transport: str = "UDP", is_uac: bool,
                 state: DialogState = DialogState.EARLY,
                 random_bytes: RandomBytes = system_random) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri  # the From/To value we present, without tag
        self.remote_uri = remote_uri
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target  # URI from the peer's Contact (§12.1)
        self.route_set = route_set  # header values, in the order to put in Route
        self.local_contact = local_contact
        self.sent_by = sent_by
        self.transport = transport
        self.is_uac = is_uac
        self.state = state
        self._rand = random_bytes

    @property
    def id(self) -> tuple[str, str, str]:
        """The dialog id (Call-ID, local tag, remote tag), RFC 3261 §12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation -------------------------------------------------------------------
    @classmethod
    def from_uac(cls, request: SipRequest, response: SipResponse, *, sent_by: str,
                 transport: str = "UDP",
                 random_bytes: RandomBytes = system_random) -> Dialog:
        """The UAC side, from our INVITE and a 1xx/2xx carrying a To tag (§12.1.2)."""
        remote_tag = response.to_tag
        if remote_tag is None:
            raise ValueError("a dialog needs a To tag in the response")
        contacts = response.contacts
        # §12.1.2: route set = Record-Route of the response, reversed.
        routes = [v for v in reversed(response.headers.get_list("record-route"))]
        local_tag = request.from_tag or ""
        return cls(
            call_id=request.call_id, local_tag=local_tag, remote_tag=remote_tag,
            local_uri=_strip_tag(request.headers.get("from") or ""),
            remote_uri=_strip_tag(request.headers.get("to") or ""),
            local_seq=request.cseq.number, remote_seq=None,
            remote_target=str(contacts[0].uri) if contacts else request.uri,
            route_set=routes,
            local_contact=(request.headers.get("contact") or ""),
            sent_by=sent_by, transport=transport, is_uac=True,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            random_bytes=random_bytes,
        )

    @classmethod
    def from_uas(cls, request: SipRequest, *, local_tag: str, local_contact: str,
                 sent_by: str, transport: str = "UDP",
                 random_bytes: RandomBytes = system_random) -> Dialog:
        """The UAS side, from a received INVITE (§12.1.1); we pick ``local_tag``.

        The response we send must carry ``local_tag`` in To, the request's
        Record-Route and ``local_contact`` in Contact.
        """
        contacts = request.contacts
        return cls(
            call_id=request.call_id, local_tag=local_tag, remote_tag=request.from_tag or "",
            local_uri=_strip_tag(request.headers.get("to") or ""),
            remote_uri=_strip_tag(request.headers.get("from") or ""),
            local_seq=int.from_bytes(random_bytes(2), "big") + 1,
            remote_seq=request.cseq.number,
            remote_target=str(contacts[0].uri) if contacts else "",
            # §12.1.1: route set = Record-Route of the request, in order.
            route_set=request.headers.get_list("record-route"),
            local_contact=local_contact, sent_by=sent_by, transport=transport, is_uac=False,
            random_bytes=random_bytes,
        )

    # -- incoming -------------------------------------------------------------------
    def matches(self, msg: SipRequest | SipResponse) -> bool:
        """Whether an in-dialog message belongs to this dialog (§12.2.2 / §12.2.1.2)."""
        if msg.call_id != self.call_id:
            return False
        if isinstance(msg, SipRequest):
            return msg.to_tag == self.local_tag and msg.from_tag == self.remote_tag
        return msg.from_tag == self.local_tag and msg.to_tag == self.remote_tag

    def receive_request(self, request: SipRequest) -> int | None:
        """Check an in-dialog request (§12.2.2); return an error status or None.

        A CSeq lower than the last one is out of order: 500. ACK and CANCEL reuse
        the INVITE's number and are not checked (an equal CSeq is a retransmission,
        which the transaction layer absorbs before it gets here).
        A target refresh (re-INVITE, UPDATE) replaces the remote target.
        """
        if request.method not in ("ACK", "CANCEL"):
            number = request.cseq.number
            if self.remote_seq is not None and number < self.remote_seq:
                return 500
            self.remote_seq = number
        if request.method in ("INVITE", "UPDATE"):
            contacts = request.contacts
            if contacts:
                self.remote_target = str(contacts[0].uri)
        if request.method == "BYE":
            self.state = DialogState.TERMINATED
        return None

    def receive_response(self, request: SipRequest, response: SipResponse) -> None:
        """Update the dialog from a response to our request (§12.1.2, §12.2.1.2)."""
        if request.method == "INVITE" and 200 <= response.status < 300:
            if self.state is DialogState.EARLY and self.is_uac:
                # §12.1.2: the 2xx's Record-Route fixes the route set for good.
                self.route_set = list(reversed(response.headers.get_list("record-route")))
            self.state = DialogState.CONFIRMED
        if request.method in ("INVITE", "UPDATE") and 200 <= response.status < 300:
            contacts = response.contacts
            if contacts:
                self.remote_target = str(contacts[0].uri)  # target refresh (§12.2.1.2)
        if response.status in (408, 481):
            self.state = DialogState.TERMINATED  # §12.2.1.2

    # -- outgoing -------------------------------------------------------------------
    def next_hop(self) -> str:
        """The URI to send the next request to: first route or remote target (§8.1.2)."""
        if self.route_set:
            return str(parse_name_addr(self.route_set[0]).uri)
        return self.remote_target

    def next_hop_address(self) -> tuple[str, int] | None:
        """Where to send the next request (§12.2.1.1 then RFC 3263 §4.2), when the next
        hop's host is an IP literal: its port, else 5061 for sips: and 5060 for sip:.
        None for a host name (no resolver here: the caller falls back to the peer's
        source address)."""
        try:
            uri = parse_name_addr(f"<{self.next_hop()}>").uri
        except Exception:  # a broken Contact: the caller falls back likewise
            return None
        if not isinstance(uri, SipUri) or uri.scheme == "tel":
            return None
        host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return host, uri.port or (5061 if uri.scheme == "sips" else 5060)

    def create_request(self, method: str, *, body: bytes = b"", content_type: str | None = None,
                       extra_headers: Iterable[tuple[str, str]] = (),
                       branch: str | None = None, cseq: int | None = None) -> SipRequest:
        """Build an in-dialog request (RFC 3261 §12.2.1.1) with a new branch.

        The local CSeq is incremented except for ACK (which must pass ``cseq``,
        the INVITE's number) and CANCEL.
        """
        if cseq is None:
            if method in ("ACK", "CANCEL"):
                raise ValueError(f"{method} reuses the INVITE CSeq: pass cseq=")
            self.local_seq += 1
            cseq = self.local_seq
        ruri, routes = self._request_uri_and_routes()
        h = Headers()
        h.add("Via", f"SIP/2.0/{self.transport} {self.sent_by};branch="
                     f"{branch or new_branch(self._rand)};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        h.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for route in routes:
            h.add("Route", route)
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER", "NOTIFY") and self.local_contact:
            h.add("Contact", self.local_contact)  # §12.2.1.1: target refresh needs Contact
        for name, value in extra_headers:
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return SipRequest(method, ruri, h, body)

    def create_ack(self, invite_cseq: int, *, body: bytes = b"",
                   content_type: str | None = None) -> SipRequest:
        """The end-to-end ACK for a 2xx to INVITE number ``invite_cseq`` (§13.2.2.4)."""
        return self.create_request("ACK", cseq=invite_cseq, body=body, content_type=content_type)

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        # §12.2.1.1: with a loose router first (;lr) the Request-URI is the remote
        # target; with a strict router it is the first route, and the remote target
        # is appended as the last Route.
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        if isinstance(first.uri, SipUri) and "lr" in first.uri.params:
            return self.remote_target, list(self.route_set)
        return str(first.uri), [*self.route_set[1:], f"<{self.remote_target}>"]


def _strip_tag(value: str) -> str:
    """A From/To value without its tag, as the dialog's local/remote URI."""
    na = parse_name_addr(value)
    if "tag" in na.params:  # parsed values are shared (grammar._memo): copy, never mutate
        na = NameAddr(na.uri, na.display, {k: v for k, v in na.params.items() if k != "tag"},
                      na.bracketed)
    return str(na) if na.display is not None or na.params or na.bracketed else f"<{na.uri}>"

