"""The SMS relay of one node: SMPP server for gateways, optional upstream SMSC client,
optional outbound webhook, and the HTTP routes (`SmsSubsystem`).

Every message follows one path, whatever it came on (`SmsService.handle`): normalise
the numbers, look the binding up in memory, ask the dialplan, then refuse with the
mapped status or forward with X as the sender over the configured route, and record
the attempt. The decisions are in relay.sms.router (pure); this module does the I/O.

It lives in relay/io rather than relay/sms because relay/sms is sans-IO (STYLE point 1,
enforced by tests/unit/sms/test_sans_io.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dialplan.numbers import InvalidNumber, mask, normalise
from dialplan.policy import counter_key
from dialplan.route import Bridge, counted, decide, hooked, scored
from relay.bindings.store import StoreUnavailable
from relay.contacts import contact_from_message
from relay.guard import check_sms, for_node
from relay.io.hook import text_hook
from relay.io.smpp_client import SmppClient
from relay.io.smpp_server import NoRouteError, QueryAnswer, SessionRef, SmppServer
from relay.io.webhook import WebhookSender
from relay.settings import Sections
from relay.sms import constants as c
from relay.sms.concat import ConcatError
from relay.sms.ids import MessageIds
from relay.sms.message import SmsMessage
from relay.sms.pdu import CancelSm, DeliverSm, QuerySm, SubmitSm
from relay.sms.receipt import STATES, Receipt, receipt_deliver_sm
from relay.sms.refusals import is_temporary
from relay.sms.retries import RetryBook, RetryKey, Seen
from relay.sms.router import (
    Forward,
    Origin,
    ReceiptBook,
    Reject,
    message_record,
    part_receipts,
    plan,
    reject,
    smpp_number,
    split_payload,
    wire_number,
)
from relay.sms.session import SessionConfig
from relay.subsystem import Stop, Subsystem

if TYPE_CHECKING:
    from aiohttp import web

    from relay.app import Node

__all__ = ["SmsService", "SmsSettings", "SmsSubsystem"]

log = logging.getLogger("relay.sms")

KIND = "message"
# A part id other than the record's own: {"id": part id, "message": record id}, so every
# id a gateway was given leads to the record (`GET /v1/messages/{id}`, query_sm).
PART_KIND = "message_part"
# query_sm (§4.8.2 message_state, §5.2.28) from a record's status.
_QUERY_STATE = {
    "received": c.MESSAGE_STATE_ENROUTE, "queued": c.MESSAGE_STATE_ENROUTE,
    "forwarded": c.MESSAGE_STATE_ENROUTE, "delivered": c.MESSAGE_STATE_DELIVERED,
    "refused": c.MESSAGE_STATE_REJECTED, "failed": c.MESSAGE_STATE_UNDELIVERABLE,
    "undeliverable": c.MESSAGE_STATE_UNDELIVERABLE,
}


@dataclass(frozen=True, slots=True)
class Upstream:
    """`[smpp.upstream]`: the SMSC the relay binds to as a transceiver."""

    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""


@dataclass(frozen=True, slots=True)
class SmsSettings:
    """`[sms]` and `[smpp.upstream]` of relay.toml (documented in relay/sms/SMPP.md)."""

    route: str = "gateway"
    gateway: str | None = None
    webhook_url: str | None = None
    webhook_secret: str = ""
    webhook_retries: int = 5
    webhook_backoff: float = 0.5
    retain_text: bool = False
    throttle: float | None = None
    throttle_burst: int = 10
    window: int = 10
    enquire_link_interval: float = 30.0
    upstream: Upstream | None = None
    retry_window: float = 3600.0  # a gateway's resend of the same message within it is one

    @classmethod
    def from_sections(cls, sections: Sections) -> SmsSettings:
        """From the typed `[sms]` and `[smpp.upstream]` (checked in relay.settings)."""
        sms, up = sections.sms, sections.smpp.upstream
        upstream = (Upstream(up.host, up.port, up.system_id, up.password, up.system_type)
                    if up is not None else None)
        url = sms.webhook_url
        return cls(
            route=sms.route, gateway=sms.gateway, webhook_url=url,
            webhook_secret=sms.webhook_secret, webhook_retries=sms.webhook_retries,
            webhook_backoff=sms.webhook_backoff, retain_text=sms.retain_text,
            throttle=sms.throttle or None, throttle_burst=sms.throttle_burst,
            window=sms.window, enquire_link_interval=sms.enquire_link_interval,
            upstream=upstream, retry_window=sms.retry_window,
        )


def text_sha256(text: str | None, payload: bytes) -> str:
    """The SHA-256 a record keeps of a message (of the UTF-8 text, else the payload)."""
    return hashlib.sha256(text.encode("utf-8") if text is not None else payload).hexdigest()


def _smpp_time(t: float) -> str:
    """§7.1.1 absolute time in UTC: YYMMDDhhmmss, tenths, quarter hours offset, '+'."""
    return datetime.fromtimestamp(t, UTC).strftime("%y%m%d%H%M%S") + "000+"


@dataclass(frozen=True, slots=True)
class Outbound:
    """A text on its way out, as every route gets it: the routing decision, the text (or
    the raw payload), the data coding, the esm_class and the encoded parts, the record
    being written, where it came from and the gateway account it came in on."""

    fwd: Forward
    text: str | None
    payload: bytes
    data_coding: int
    esm: int
    bodies: list[bytes]
    rec: dict[str, Any]
    origin: Origin
    system_id: str


class SmsService:
    """Routes messages from SMPP gateways, the upstream SMSC and HTTP to the far side."""

    def __init__(self, node: Node, settings: SmsSettings) -> None:
        self.node = node
        self.settings = settings
        self.server: SmppServer | None = None
        self.client: SmppClient | None = None
        self.webhook: WebhookSender | None = None
        self.hook = text_hook(node)  # [dialplan] hook_url: texts are asked too
        self.receipts = ReceiptBook()
        self._ids = MessageIds()  # one format for every id, part or message (relay.sms.ids)
        self.retries = RetryBook(settings.retry_window)
        self._aliases: OrderedDict[str, str] = OrderedDict()  # part id -> record id
        self._refs = itertools.count(1)
        # Recent records by id: updates (forwarded, delivered) never read the store.
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._recent_max = 20_000
        self._writer = node.record_writer
        # Work the call path does not wait for: receipts to gateways, webhook results
        # settled from the store.
        self._tasks: set[asyncio.Task[None]] = set()
        self.guard = for_node(node)  # the egress leak guard (relay/guard.py)
        m = node.metrics
        self._counts = m.counter("relay_sms_messages_total",
                                 "SMS messages by origin and result", ("origin", "result"))
        m.gauge("relay_sms_receipts_pending", "forwarded messages awaiting a receipt",
                lambda: float(len(self.receipts)))

    # ---- lifecycle ----
    async def start(self) -> None:
        """Start the SMPP server (if --smpp), the upstream client and the webhook."""
        s, cfg = self.settings, self.node.config
        session = SessionConfig(window=s.window, enquire_link_interval=s.enquire_link_interval,
                                throttle_rate=s.throttle, throttle_burst=s.throttle_burst)
        if s.webhook_url:
            self.webhook = WebhookSender(s.webhook_url, s.webhook_secret,
                                         on_result=self._webhook_result,
                                         retries=s.webhook_retries, backoff=s.webhook_backoff,
                                         store=self.node.config.store,  # durable
                                         lease_ttl=cfg.sections.events.lease_ttl)
            await self.webhook.start()
        if cfg.smpp is not None:
            self.server = SmppServer(cfg.smpp[0], cfg.smpp[1], cfg.smpp_accounts,
                                     on_message=self.on_gateway_message,
                                     on_query=self.on_query, on_cancel=self.on_cancel,
                                     on_lost=self.on_lost, config=session, ids=self._ids)
            await self.server.start()
        if s.upstream is not None:
            up = s.upstream
            self.client = SmppClient(up.host, up.port, up.system_id, up.password,
                                     system_type=up.system_type,
                                     on_message=self.on_upstream_message,
                                     config=SessionConfig(window=s.window,
                                                          enquire_link_interval=30.0))
            await self.client.start()

    async def stop(self) -> None:
        """Stop taking messages (messages being handled are answered, then every gateway
        is unbound), then let queued webhooks finish briefly."""
        if self.server is not None:
            await self.server.stop()
        if self.client is not None:
            await self.client.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        if self.hook is not None:
            await self.hook.close()

    # ---- entry points ----
    async def on_gateway_message(self, ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
        """SmppServer hook: a gateway submitted a (reassembled) message."""
        action, msg_id = await self.handle(msg, origin=f"smpp:{ref.system_id}",
                                           system_id=ref.system_id, route=self.settings.route)
        return (action.command_status, "") if isinstance(action, Reject) else (c.ESME_ROK, msg_id)

    def on_lost(self, ref: SessionRef, msg: SmsMessage, message_id: str) -> None:
        """SmppServer hook: a message was forwarded but the gateway never heard so (its
        link went down): its resend is answered with the same id, not forwarded again."""
        rec_id = self._aliases.get(message_id, message_id)
        rec = self._recent.get(rec_id)
        if rec is None or rec.get("status") not in ("delivered", "forwarded", "queued"):
            return
        key = (f"smpp:{ref.system_id}", msg.source_addr, msg.destination_addr,
               text_sha256(msg.text, msg.payload))
        self.retries.note(key, rec_id, c.ESME_ROK, None, self.node.clock())

    async def on_query(self, ref: SessionRef, pdu: QuerySm) -> QueryAnswer:
        """SmppServer hook: query_sm, answered from the message record for the gateway
        that submitted the message (anyone else learns nothing: ESME_RQUERYFAIL)."""
        if self.server is not None and self.server.pending_part(pdu.message_id, ref.system_id):
            return QueryAnswer(c.ESME_ROK, message_state=c.MESSAGE_STATE_ACCEPTED)
        rec = await self.find(pdu.message_id)
        if rec is None or rec.get("origin") != f"smpp:{ref.system_id}":
            return QueryAnswer(c.ESME_RQUERYFAIL)
        status = str(rec.get("status"))
        state = _QUERY_STATE.get(status, c.MESSAGE_STATE_UNKNOWN)
        final = {"delivered": rec.get("delivered_at"), "refused": rec.get("received_at"),
                 "failed": rec.get("received_at"),
                 "undeliverable": rec.get("delivered_at") or rec.get("received_at")}.get(status)
        return QueryAnswer(c.ESME_ROK, final_date=_smpp_time(final) if final else "",
                           message_state=state,
                           error_code=int(rec.get("command_status") or 0) & 0xFF)

    async def on_cancel(self, ref: SessionRef, pdu: CancelSm) -> int:
        """SmppServer hook: cancel_sm. Only a message not forwarded yet can be cancelled:
        one whose parts are still coming in (forwarding starts when the last arrives)."""
        server = self.server
        if server is not None and pdu.message_id and server.pending_part(pdu.message_id,
                                                                         ref.system_id):
            dropped = server.cancel_pending(pdu.message_id)
            log.info("sms %s cancelled by %s (%d part(s) dropped)", pdu.message_id,
                     ref.system_id, dropped)
            return c.ESME_ROK
        return c.ESME_RCANCELFAIL

    async def find(self, msg_id: str) -> dict[str, Any] | None:
        """The record a message id leads to: the message's own id or any part's id."""
        rec_id = self._aliases.get(msg_id, msg_id)
        rec = self._recent.get(rec_id)
        if rec is not None:
            return rec
        try:
            rec = await self.node.records.get(KIND, rec_id)
            if rec is None:
                alias = await self.node.records.get(PART_KIND, msg_id)
                if alias is not None:
                    rec = (self._recent.get(alias["message"])
                           or await self.node.records.get(KIND, alias["message"]))
        except StoreUnavailable:
            return None
        return rec

    async def on_upstream_message(self, ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
        """SmppClient hook: an MO message or a delivery receipt from the upstream SMSC."""
        if msg.receipt is not None:
            await self._receipt_from_upstream(msg)
            return c.ESME_ROK, ""
        # A reply to an MO goes back out where MO traffic comes from: the upstream SMSC.
        action, msg_id = await self.handle(msg, origin="upstream", system_id="",
                                           route="upstream")
        return (action.command_status, "") if isinstance(action, Reject) else (c.ESME_ROK, msg_id)

    async def accept_http(self, sender: str, x: str, text: str) -> tuple[Forward | Reject, str]:
        """POST /v1/sms: an HTTP gateway hands over a message."""
        route = self.settings.route
        if route == "gateway" and not self.settings.gateway and self.webhook is not None:
            route = "webhook"  # HTTP in, HTTP out, unless a gateway is named
        dc, parts = split_payload(0, text, b"", 0)
        return await self.handle_fields(
            sender_raw=sender, x_raw=x, text=text, payload=b"", data_coding=dc,
            parts=len(parts), registered_delivery=0, origin="http", system_id="", route=route)

    async def handle(self, msg: SmsMessage, *, origin: str, system_id: str,
                     route: str) -> tuple[Forward | Reject, str]:
        """Route one SMPP message (see `handle_fields`)."""
        return await self.handle_fields(
            sender_raw=msg.source_addr, x_raw=msg.destination_addr, text=msg.text,
            payload=msg.payload, data_coding=msg.data_coding, parts=len(msg.parts),
            registered_delivery=msg.registered_delivery, origin=origin,
            system_id=system_id, route=route,
            tons=(msg.source_addr_ton, msg.dest_addr_ton),
            part_ids=tuple(zip(msg.part_ids, (p.registered_delivery for p in msg.parts),
                               strict=False)))

    async def handle_fields(
        self, *, sender_raw: str, x_raw: str, text: str | None, payload: bytes,
        data_coding: int, parts: int, registered_delivery: int, origin: str,
        system_id: str, route: str, tons: tuple[int, int] | None = None,
        part_ids: tuple[tuple[str, int], ...] = (),
    ) -> tuple[Forward | Reject, str]:
        """Decide, record, forward. Returns the action (a Reject on failure) and our id.

        `part_ids` are the (id, registered_delivery) of each part as the gateway was
        answered; the first part's id is the record's, the others lead to it.
        """
        node = self.node
        now = node.clock()
        sha = text_sha256(text, payload)
        retry_key = (origin, sender_raw, x_raw, sha)
        seen = self.retries.retry(retry_key, now)
        if seen is not None:
            again = self._resend(seen, retry_key, part_ids, now)
            if again is not None:
                return again
        msg_id = seen.record_id if seen is not None else (part_ids[0][0] if part_ids
                                                          else self._ids())
        cc = node.config.default_cc
        action: Forward | Reject
        sender, x = sender_raw, x_raw
        try:
            sender = (normalise(sender_raw, cc) if tons is None
                      else smpp_number(sender_raw, tons[0], cc))
        except InvalidNumber:
            action = reject("invalid_source")
        else:
            try:
                x = normalise(x_raw, cc) if tons is None else smpp_number(x_raw, tons[1], cc)
            except InvalidNumber:
                action = reject("invalid_destination")
            else:
                entry = node.table.lookup(x, sender)
                policy = node.policies.for_binding(entry.policy) if entry is not None else None
                decision = decide(entry, node.table.in_use(x), sender, now, "sms",
                                  policy=policy, blocked=node.policies.blocked(sender, x, now))
                if isinstance(decision, Bridge) and decision.max_score is not None:
                    decision = scored(decision, await self._score(sender, now))
                if isinstance(decision, Bridge) and self.hook is not None:
                    decision = hooked(decision, await self.hook.allow_text({
                        "at": now, "message_id": msg_id, "x": x, "caller": sender,
                        "binding": decision.binding, "direction": decision.direction,
                        "out_id": getattr(entry, "out_id", None)}))
                if isinstance(decision, Bridge) and decision.limit is not None:
                    decision = counted(decision, await self._admit(decision, sender, now))
                action = plan(sender, x, decision)
        rec = message_record(msg_id, now=now, sender=sender, x=x, text=text, payload=payload,
                             data_coding=data_coding, parts=parts, origin=origin,
                             retain_text=self.settings.retain_text, action=action, route=route,
                             text_sha256=sha)
        self._note_parts(rec, part_ids)
        if seen is not None:  # a resend of a temporarily refused message: one record
            first = self._recent.get(seen.record_id)
            rec.update(retries=seen.retries, started_at=(first or rec)["started_at"],
                       received_at=(first or rec)["received_at"], last_retry_at=now)
            if isinstance(action, Reject) and action.reason == seen.reason:
                self._update(rec)
                return action, msg_id
            self.retries.forget(retry_key)
        else:
            node.contact_writer.submit(contact_from_message(rec))  # the sender's score inputs
        if isinstance(action, Reject):
            self.retries.note(retry_key, msg_id, action.command_status, action.reason, now)
            self._counts[(origin, action.reason)] = self._counts.get((origin, action.reason), 0) + 1
            if log.isEnabledFor(logging.DEBUG):  # mask() costs, even when nothing is logged
                log.debug("sms %s refused %s -> %s: %s (0x%02X)", msg_id, mask(sender), x,
                          action.reason, action.command_status)
            self._save(rec)
            return action, msg_id
        origin_ref = Origin(msg_id, system_id, sender, x, registered_delivery,
                            rec["received_at"], part_ids)
        failure = await self._forward(route, action, text, payload, data_coding, rec,
                                      origin_ref, system_id)
        if failure is not None:
            rec.update(status="failed", reason=failure.reason,
                       command_status=failure.command_status)
            self._counts[(origin, failure.reason)] = self._counts.get((origin, failure.reason),
                                                                      0) + 1
            self._save(rec)
            return failure, msg_id
        self._counts[(origin, "forwarded")] = self._counts.get((origin, "forwarded"), 0) + 1
        self._save(rec)
        if rec["status"] == "delivered":
            self._spawn_receipt(origin_ref, "DELIVRD", rec["delivered_at"] or now)
        return action, msg_id

    def _resend(self, seen: Seen, key: RetryKey, part_ids: tuple[tuple[str, int], ...],
                now: float) -> tuple[Forward | Reject, str] | None:
        """A gateway resent a message the relay answered before. Forwarded (its answer
        was lost): the same id again, nothing forwarded. Refused for good: the same
        refusal, counted on the first record. Refused for now: None, decide again."""
        first = self._recent.get(seen.record_id)
        self._note_parts(first, part_ids, record_id=seen.record_id)
        if seen.command_status == c.ESME_ROK:
            if first is not None:
                first.update(retries=seen.retries, last_retry_at=now)
                self._update(first)
            log.info("sms %s: resend of a forwarded message answered again, not forwarded",
                     seen.record_id)
            r = first or {}
            return Forward(r.get("binding") or "", r.get("x") or "", r.get("sender") or "",
                           r.get("recipient") or "", r.get("direction") or ""), seen.record_id
        if not is_temporary(seen.command_status):
            if first is not None:
                first.update(retries=seen.retries, last_retry_at=now)
                self._update(first)
            return reject(seen.reason or "forward_failed",
                          first.get("binding") if first else None), seen.record_id
        return None

    def _note_parts(self, rec: dict[str, Any] | None, part_ids: tuple[tuple[str, int], ...],
                    record_id: str | None = None) -> None:
        """Make every part id lead to the record (in memory, and in the store)."""
        rec_id = record_id or (rec["id"] if rec is not None else None)
        if rec_id is None or len(part_ids) < 1:
            return
        if rec is not None and len(part_ids) > 1:
            rec.setdefault("part_ids", [pid for pid, _ in part_ids])
        for pid, _ in part_ids:
            if pid == rec_id:
                continue
            self._aliases[pid] = rec_id
            self._writer.submit(PART_KIND, {"id": pid, "started_at": self.node.clock(),
                                            "message": rec_id})
        while len(self._aliases) > self._recent_max:
            self._aliases.popitem(last=False)

    def _update(self, rec: dict[str, Any]) -> None:
        """Store a changed record without announcing an event (a resend is no news)."""
        self._recent[rec["id"]] = rec
        self._writer.submit(KIND, dict(rec))

    async def _score(self, sender: str, now: float) -> int:
        """The sender's harassment score (`max_score`); a store that cannot answer in
        time scores 0 (counter_fail open) or above any limit (closed), counted."""
        node = self.node
        known = node.scores.cached(sender, now)  # at once, when this node has one
        if known is not None:
            return known
        try:
            return await asyncio.wait_for(node.scores.score(sender, now),
                                          node.config.counter_timeout)
        except (StoreUnavailable, TimeoutError) as exc:
            node.counter_errors += 1
            log.warning("sms score unavailable (%s): counter_fail=%s", exc,
                        node.config.counter_fail)
            return 0 if node.config.counter_fail == "open" else 101

    async def _admit(self, d: Bridge, sender: str, now: float) -> bool:
        """Count the text in the shared counter of (binding, sender) (`max_sms`), within
        `[dialplan] counter_timeout`; a counter that cannot answer admits or refuses as
        `counter_fail` says, and is counted."""
        node = self.node
        assert d.limit is not None
        try:
            return await asyncio.wait_for(
                node.counters.take(counter_key("sms", d.binding, sender), now, d.limit),
                node.config.counter_timeout)
        except (StoreUnavailable, TimeoutError) as exc:
            node.counter_errors += 1
            log.warning("sms counter unavailable (%s): counter_fail=%s", exc,
                        node.config.counter_fail)
            return node.config.counter_fail == "open"

    # ---- forwarding ----
    async def _forward(self, route: str, fwd: Forward, text: str | None, payload: bytes,
                       data_coding: int, rec: dict[str, Any], origin: Origin,
                       system_id: str) -> Reject | None:
        try:
            dc, bodies = split_payload(data_coding, text, payload, next(self._refs) & 0xFF)
        except (ValueError, ConcatError):
            return reject("undecodable", fwd.binding)
        esm = c.ESM_CLASS_UDHI if len(bodies) > 1 else 0
        if not check_sms(self.node, self.guard, rec["id"], fwd,  # egress leak guard
                         [wire_number(fwd.x), text or ""], b"" if text is not None else payload):
            return reject("leak_blocked", fwd.binding)
        out = Outbound(fwd, text, payload, dc, esm, bodies, rec, origin, system_id)
        return await _ROUTES[route](self, out)

    async def _via_gateway(self, out: Outbound) -> Reject | None:
        """deliver_sm to a bound RX/TRX link: the configured gateway, else the origin's."""
        fwd, dc, esm, bodies, rec = out.fwd, out.data_coding, out.esm, out.bodies, out.rec
        target = self.settings.gateway or out.system_id
        if self.server is None or not target:
            return reject("no_route", fwd.binding)
        try:
            # Parts go one after another so they leave in order on one link.
            for body in bodies:
                resp = await self.server.deliver(target, DeliverSm(
                    source_addr=wire_number(fwd.x), source_addr_ton=1, source_addr_npi=1,
                    destination_addr=wire_number(fwd.recipient), dest_addr_ton=1, dest_addr_npi=1,
                    esm_class=esm, data_coding=dc, short_message=body))
                if resp.command_status != c.ESME_ROK:
                    log.info("sms %s: gateway %s answered 0x%02X", rec["id"], target,
                             resp.command_status)
                    return reject("forward_failed", fwd.binding)
        except NoRouteError:
            return reject("no_route", fwd.binding)
        except (ConnectionError, TimeoutError) as exc:
            log.info("sms %s: deliver to %s failed: %s", rec["id"], target, exc)
            return reject("no_route", fwd.binding)
        # The gateway's deliver_sm_resp is the last hop the relay can see on this route.
        t = self.node.clock()
        rec.update(status="delivered", forwarded_at=t, delivered_at=t)
        return None

    async def _via_upstream(self, out: Outbound) -> Reject | None:
        """submit_sm to the upstream SMSC, always asking for a receipt (delivered_at)."""
        fwd, dc, esm, bodies, rec = out.fwd, out.data_coding, out.esm, out.bodies, out.rec
        client = self.client
        if client is None or not client.bound:
            return reject("no_route", fwd.binding)
        far_id = ""
        far_ids: list[str] = []
        try:
            for body in bodies:
                resp = await client.submit(SubmitSm(
                    source_addr=wire_number(fwd.x), source_addr_ton=1, source_addr_npi=1,
                    destination_addr=wire_number(fwd.recipient), dest_addr_ton=1, dest_addr_npi=1,
                    esm_class=esm, data_coding=dc, registered_delivery=1,
                    short_message=body), timeout=5.0)
                if resp.command_status != c.ESME_ROK:
                    log.info("sms %s: upstream answered 0x%02X", rec["id"], resp.command_status)
                    return reject("forward_failed", fwd.binding)
                far_id = getattr(resp, "message_id", "") or far_id
                if far_id:
                    far_ids.append(far_id)
        except (ConnectionError, TimeoutError) as exc:
            log.info("sms %s: upstream submit failed: %s", rec["id"], exc)
            return reject("no_route", fwd.binding)
        # The SMSC receipts each part; the message is done when every part is.
        if far_ids:
            self.receipts.remember(far_ids, out.origin)
        rec.update(status="forwarded", forwarded_at=self.node.clock(), far_id=far_id)
        return None

    async def _via_webhook(self, out: Outbound) -> Reject | None:
        """Into the webhook's queue (durable with a store): the record says `queued`
        until the receiver takes it."""
        fwd, text, payload, dc, rec = out.fwd, out.text, out.payload, out.data_coding, out.rec
        if self.webhook is None:
            return reject("no_route", fwd.binding)
        body: dict[str, Any] = {"id": rec["id"], "from": fwd.x, "to": fwd.recipient,
                                "binding": fwd.binding, "data_coding": dc,
                                "parts": rec["parts"]}
        if text is not None:
            body["text"] = text
        else:
            body["payload_hex"] = payload.hex()
        rec["status"] = "queued"
        self.webhook.submit(rec["id"], body)
        return None

    def _webhook_result(self, msg_id: str, ok: bool, status: int | None, attempts: int) -> None:
        t = self.node.clock()
        rec = self._recent.get(msg_id)
        if rec is None:
            # Queued before a restart (the outbox is durable): its record is in the store.
            task = asyncio.get_running_loop().create_task(
                self._settle_stored(msg_id, ok, status, attempts, t))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._settle_webhook(rec, ok, status, attempts, t)

    async def _settle_stored(self, msg_id: str, ok: bool, status: int | None, attempts: int,
                             t: float) -> None:
        try:
            stored = await self.node.records.get(KIND, msg_id)
        except StoreUnavailable:
            log.warning("message %s: webhook result not recorded (store unavailable)", msg_id)
            return
        if stored is not None:
            self._settle_webhook(dict(stored), ok, status, attempts, t)

    def _settle_webhook(self, rec: dict[str, Any], ok: bool, status: int | None,
                        attempts: int, t: float) -> None:
        if ok:
            rec.update(status="forwarded", forwarded_at=t, attempts=attempts)
        else:
            rec.update(status="failed", reason="webhook", http_status=status, attempts=attempts)
        self._save(rec)

    # ---- receipts ----
    async def _receipt_from_upstream(self, msg: SmsMessage) -> None:
        assert msg.receipt is not None
        far_id = msg.receipt.message_id
        tlv = msg.parts[0].pdu.tlv(c.TAG_RECEIPTED_MESSAGE_ID)
        if tlv is not None:
            far_id = tlv.as_str()  # §5.3.2.12: the TLV is authoritative over the text
        now = self.node.clock()
        stat = msg.receipt.stat
        settled = self.receipts.settle(far_id, stat, now)
        if settled is None:
            log.debug("receipt for unknown message %s", far_id)
            return
        origin, final = settled
        if not final:
            return  # other parts' receipts are still to come
        rec = self._recent.get(origin.msg_id)
        if rec is None:
            try:
                rec = await self.node.records.get(KIND, origin.msg_id)
            except StoreUnavailable:
                rec = None  # the receipt still goes to the sender; the record stays as it was
        if rec is not None:
            rec = dict(rec)
            if stat == "DELIVRD":
                rec.update(status="delivered", delivered_at=now)
            elif stat in ("UNDELIV", "EXPIRED", "REJECTD", "DELETED"):
                rec.update(status="undeliverable", reason=stat.lower())
            self._save(rec)
        # Not awaited: the SMSC's deliver_sm_resp must not wait on the gateway's link.
        self._spawn_receipt(origin, stat if stat in STATES else "UNKNOWN", now)

    def _spawn_receipt(self, origin: Origin, stat: str, done: float) -> None:
        """Send the receipts `origin`'s parts asked for (none: nothing to do)."""
        if not origin.system_id or self.server is None:
            return
        receipts = part_receipts(origin, stat, done)
        if not receipts:
            return
        task = asyncio.get_running_loop().create_task(self._send_receipts(origin, receipts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_receipts(self, origin: Origin, receipts: list[Receipt]) -> None:
        """deliver_sm receipts to the sender's gateway: from X, TON 1 / NPI 1, one per
        part that asked, each quoting the id that part was answered with."""
        if self.server is None:
            return
        for r in receipts:
            try:
                await self.server.deliver(origin.system_id,
                                          receipt_deliver_sm(wire_number(origin.x),
                                                             wire_number(origin.sender), r))
            except (NoRouteError, ConnectionError, TimeoutError) as exc:
                log.info("receipt for %s not delivered to %s: %s", r.message_id,
                         origin.system_id, exc)
                return

    # ---- records ----
    def recent(self, msg_id: str) -> dict[str, Any] | None:
        """A record written lately (it may still be queued for the store)."""
        return self._recent.get(msg_id)

    def _save(self, rec: dict[str, Any]) -> None:
        """Queue the record (a copy: later updates must not race the batch writer)."""
        self._recent[rec["id"]] = rec
        self._recent.move_to_end(rec["id"])
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)
        self._writer.submit(KIND, dict(rec))
        if self.node.events is not None:
            self.node.events.on_message(rec, self.node.clock())


class SmsSubsystem(Subsystem):
    """SMS: the SMPP server for gateways, the upstream SMSC, the webhook; `/v1/sms` and
    `/v1/messages`."""

    name = "sms"
    sections = ("sms", "smpp")

    def add_routes(self, node: Node, app: web.Application) -> None:
        from relay.api.sms import register_routes

        register_routes(app)

    async def run(self, node: Node) -> Stop:
        service = await _start(node)
        return service.stop


async def _start(node: Node) -> SmsService:
    settings = SmsSettings.from_sections(node.config.sections)
    service = SmsService(node, settings)
    node.sms = service
    await service.start()
    if node.config.smpp is not None:
        log.info("sms: route=%s gateways=%d upstream=%s webhook=%s", settings.route,
                 len(node.config.smpp_accounts),
                 f"{settings.upstream.host}:{settings.upstream.port}" if settings.upstream
                 else None, bool(settings.webhook_url))
    return service


# `[sms] route` -> how a text leaves (STYLE.md: implementations chosen by name from a
# registry); relay.sms.routes.ROUTES names them for the settings.
_ROUTES: dict[str, Callable[[SmsService, Outbound], Awaitable[Reject | None]]] = {
    "gateway": SmsService._via_gateway,
    "upstream": SmsService._via_upstream,
    "webhook": SmsService._via_webhook,
}
