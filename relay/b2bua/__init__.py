"""The B2BUA core (sans-IO): a SIP call map, two leg machines per call, call control.

Stacked as sippy's B2BUA and aioquic's h3-over-quic are: each layer takes the events
of the one below and returns its own.

- :mod:`.callmap` — :class:`~.callmap.CallMap`, the only SIP-reading layer: admission
  (trusted trunks, Max-Forwards, Require, OPTIONS, drain, concurrency and CPS limits),
  the transaction layer, dialogs, and the legs of every call; it reads the dialled X,
  extension (``X;ext=E``, ``X,E``) and caller of an INVITE into a leg-neutral
  :class:`~.events.Incoming`.
- :mod:`._state` — the leg state tables (caller-facing UAS, callee-facing UAC).
- :mod:`.legs` — the legs: SIP in, leg-neutral events out (:mod:`.events`: Try, Ring,
  Connect, Fail, Disconnect, Offer/Answer, Info/InfoReply, Ack) and back through
  ``leg.deliver`` (a dispatch table). Every message a leg sends is built from its own
  dialog: only SDP (rewritten by the media backend) and INFO bodies cross between legs
  (privacy whitelist).
- :mod:`._phases` — the call's phases as a table (routing, collecting, placing,
  ringing, connected, ending, ended) and its named timers.
- :mod:`.controller` — :class:`~.controller.CallController`, one per call, never SIP:
  routing (the in-memory binding table and :func:`dialplan.route.decide`), the
  per-call queue that threads media jobs in order, named timers, the relay's own
  voice (prompts, ringback, announcements) and call events (ringing, answered,
  ended, refused) that the adapter drains; records ride on ended and refused.
- :mod:`.ivr` — collecting an AXE extension from digits (RFC 4733 or SIP INFO).
- :mod:`.cdr` — the call record (kind "call").

The asyncio side lives in :mod:`relay.io.sip` (sockets, one timer, media jobs) and
:mod:`relay.io.voice` (wiring into a Node, `[sip]`/`[media]` settings, drain on stop).

Decisions an operator should know:
- A callee's 3xx or 401/407 never reaches the caller (it would carry the callee
  side's Contact or a challenge meant for the relay): the caller hears 480.
- REFER is refused (403): a transfer would move or reveal a real party.
- A re-INVITE without SDP is answered with the SDP last sent to that side.
- AXE: an extension in the Request-URI routes at once; without one the relay answers
  the caller (200 with its own SDP), plays ``enter_extension``, collects digits ended
  by ``#`` or a pause, and plays ``not_found`` on a wrong one (3 tries, then BYE and
  ``unconnected_cause: no_extension``); the caller hears ringback while B is called.
  An AXE call without an offer (late offer) cannot be prompted: 484.
- Refusals for an unknown (404) or frozen (410) X are announced in 183 early media
  first (``[sip] announce_refusals``, except trunks in ``no_early_media``).
- Two SIP extensions are implemented, per leg. Session timers (RFC 4028, ``timer``):
  the relay offers ``[sip] session_expires`` to the callee, grants the caller's (or
  its own) with 422 below ``min_se``, refreshes where it is the refresher (UPDATE when
  the peer allows it, else a re-INVITE with the same SDP) and ends a call whose peer
  stopped refreshing (BYE both, cause 102, ``end_reason: session_expired``). Reliable
  provisionals (RFC 3262, ``100rel``): a callee's reliable 18x is PRACKed once; the
  caller gets reliable 18x when it requires 100rel (or supports it and the 18x carries
  early media), resent until PRACKed, one at a time, 504 after 64*T1 without PRACK.
  No other option-tag crosses; a request that *requires* one gets 420 and
  ``Unsupported`` (RFC 3261 §8.2.2.3).
- Outbound trunks (``[[sip.trunk]]``, relay.b2bua.trunks): by priority and weight, a
  call fails over on 408/503/silence before anything rang; OPTIONS probes.
- In-dialog requests go to the route set's first hop, else the peer's Contact
  (§12.2.1.1); ``[sip] symmetric`` trunks and TCP get them at the source address.
- Refusals carry ``Reason: Q.850;cause=N;text="..."`` (RFC 3326); overload and drain
  are 503 with Retry-After.
"""
