"""The B2BUA core (sans-IO): two leg machines and a call controller.

- :mod:`._state` — the leg state tables (caller-facing UAS, callee-facing UAC).
- :mod:`.legs` — the legs: SIP in, leg-neutral events out (:mod:`.events`: Try, Ring,
  Connect, Fail, Disconnect, Offer/Answer, Info/InfoReply) and back. Every message a
  leg sends is built from its own dialog: only SDP (rewritten by the media backend)
  and INFO bodies cross between legs (privacy whitelist).
- :mod:`.controller` — :class:`~.controller.Switch`: admission (trusted trunks,
  Max-Forwards, drain, concurrency and CPS limits), routing (the in-memory binding
  table and :func:`dialplan.route.decide`), the per-call event queue that threads
  media jobs in order, call timers (ring timeout, max duration), and call records.
- :mod:`.cdr` — the call record (kind "call").

The asyncio side lives in :mod:`relay.io.sip` (sockets, one timer, media jobs) and
:mod:`relay.io.voice` (wiring into a Node, `[sip]`/`[media]` settings, drain on stop).

Decisions an operator should know:
- In-dialog requests go to the address the leg's peer used (the trunk's source
  address for the caller, ``outbound`` for the callee), not to the Contact: trunks
  sit behind their own SBCs and NAT, and the Contact may be unreachable.
- A callee's 3xx or 401/407 never reaches the caller (it would carry the callee
  side's Contact or a challenge meant for the relay): the caller hears 480.
- REFER is refused (403): a transfer would move or reveal a real party.
- A re-INVITE without SDP is answered with the SDP last sent to that side.
- No SIP extension is implemented (no PRACK/100rel, no session timers): the relay
  never sends Supported or Require, drops them from what it relays, and answers a
  request that *requires* one with 420 and ``Unsupported`` (RFC 3261 §8.2.2.3). A
  callee may then not send reliable provisionals (RFC 3262 §3), so none need PRACK.
- Refusals carry ``Reason: Q.850;cause=N;text="..."`` (RFC 3326); overload and drain
  are 503 with Retry-After.
"""
