"""The one refusal table: each reason with its wire answers on every path.

DESIGN.md "SIP behaviour" (Refusals) and "Policies" give the SIP statuses; Q.850 causes
go in the RFC 3326 Reason header; SMPP command_status values are SMPP 3.4 Table 5-2
(written as numbers here: `dialplan` imports nothing of `relay`, and
relay/sms/constants.py names them); HTTP statuses answer `POST /v1/sms`. The record's
`unconnected_cause` comes from `unconnected`; reasons with `policy=True` also set the
record's `policy_reason`. `prompt` names the announcement a caller may hear in early
media (DESIGN: unknown or frozen X only; a policy refusal is never announced, it would
tell a harasser why).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["REFUSALS", "Refusal", "policy_reason"]

# SMPP 3.4 Table 5-2 values used below.
_RINVSRCADR = 0x0A  # invalid source address
_RINVDSTADR = 0x0B  # invalid destination address
_RSUBMITFAIL = 0x45  # submit_sm failed
_RX_T_APPN = 0x64  # ESME receiver temporary app error: the gateway may retry
_RX_P_APPN = 0x65  # ESME receiver permanent app error
_RX_R_APPN = 0x66  # ESME receiver reject message


class Refusal(NamedTuple):
    """A refusal reason's answers: SIP status and Q.850 cause, SMPP command_status, HTTP
    status, the record's unconnected_cause, whether it is a policy refusal, its prompt."""

    sip: int
    cause: int
    smpp: int
    http: int
    unconnected: str
    policy: bool = False
    prompt: str | None = None


REFUSALS: dict[str, Refusal] = {
    # -- the binding -------------------------------------------------------------------
    # Q.850 1 unallocated number; SMPP: X is not ours, a bad destination.
    "no_binding": Refusal(404, 1, _RINVDSTADR, 404, "no_binding", prompt="not_in_service"),
    # Q.850 22 number changed. SMPP has no "frozen": gateways (Kannel, Jasmin) treat
    # ESME_RX_R_APPN as a permanent receiver-side rejection and do not retry it.
    "frozen": Refusal(410, 22, _RX_R_APPN, 410, "frozen", prompt="number_frozen"),
    "expired": Refusal(410, 22, _RX_R_APPN, 410, "frozen", prompt="number_frozen"),
    # Q.850 21 call rejected: the caller is no party of X's binding.
    "stranger": Refusal(403, 21, _RX_P_APPN, 403, "stranger"),
    "disabled": Refusal(403, 21, _RX_P_APPN, 403, "policy"),  # voice or SMS off
    # Q.850 18 no user responding: AXN, B called X but no A is set (may change later).
    "no_party": Refusal(480, 18, _RX_T_APPN, 409, "policy"),
    "no_extension": Refusal(404, 1, _RINVDSTADR, 404, "no_extension"),
    # -- the binding's policy (DESIGN.md "Policies") -------------------------------------
    # 480 Temporarily Unavailable with Retry-After to the window's end; SMPP temporary,
    # so a gateway that retries delivers after the window.
    "quiet_hours": Refusal(480, 21, _RX_T_APPN, 409, "policy", policy=True),
    # One-way binding, the other way: 403 as DESIGN says, Q.850 21 call rejected.
    "direction": Refusal(403, 21, _RX_P_APPN, 403, "policy", policy=True),
    # 603 Decline (RFC 3261 §21.6.2): the blocklist holds the caller; Q.850 21.
    "blocked": Refusal(603, 21, _RX_P_APPN, 403, "policy", policy=True),
    # 603 Decline: the caller's counter for this binding is full (max_calls, max_sms);
    # SMS: permanent for this message, HTTP 429 Too Many Requests.
    "frequency": Refusal(603, 21, _RX_P_APPN, 429, "policy", policy=True),
    # 603 Decline: the caller's harassment score is above the policy's max_score.
    "score": Refusal(603, 21, _RX_P_APPN, 403, "policy", policy=True),
    # 603 Decline: the platform's decision hook ([dialplan] hook_url) said refuse.
    "hook": Refusal(603, 21, _RX_P_APPN, 403, "policy", policy=True),
    # -- SMS only: what a message can get wrong that a call cannot ---------------------
    "invalid_source": Refusal(484, 28, _RINVSRCADR, 422, "error"),
    "invalid_destination": Refusal(484, 28, _RINVDSTADR, 422, "error"),
    "undecodable": Refusal(488, 65, _RX_P_APPN, 422, "error"),  # data_coding we can't carry
    "no_route": Refusal(503, 34, _RX_T_APPN, 503, "error"),  # far side down: retry later
    "forward_failed": Refusal(502, 38, _RSUBMITFAIL, 502, "error"),
    # The egress leak guard (relay/guard.py) found the sender's real number in what
    # would go out: permanent (the same text would be stopped again), HTTP 422.
    "leak_blocked": Refusal(500, 41, _RX_P_APPN, 422, "error"),
}


def policy_reason(reason: str | None) -> str | None:
    """The record's `policy_reason`: `reason` when a policy rule refused, else None."""
    r = REFUSALS.get(reason) if reason is not None else None
    return reason if r is not None and r.policy else None
