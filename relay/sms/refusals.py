"""Which SMS refusals are permanent and which temporary, as gateways read them.

The reasons and their HTTP statuses come from the one refusal table,
`dialplan.refusals`; this module fixes the SMPP command_status of each for SMS so that
a gateway neither retries a hopeless message nor drops a retryable one.

What gateways do with a submit_sm_resp error (Kannel 1.4 `smsc_smpp.c`, Jasmin's
defaults, and most aggregators): ESME_RSYSERR 0x08, ESME_RMSGQFUL 0x14,
ESME_RTHROTTLED 0x58 and ESME_RX_T_APPN 0x64 are temporary, the message is queued and
resent (Kannel: every `sms-resend-freq`, by default for ever); every other status is a
permanent rejection (Kannel: DLR 16, no resend). So a reason gets 0x64 only when a
resend within minutes can succeed (the far side is down, the quiet window will end);
AXN without an A party, a frozen X or a policy "no" are permanent.

| reason | SMPP | kind | why |
| --- | --- | --- | --- |
| no_binding | 0x0B ESME_RINVDSTADR | permanent | X is not ours |
| frozen, expired | 0x66 ESME_RX_R_APPN | permanent | X will not come back |
| stranger, disabled, direction, | 0x65 ESME_RX_P_APPN | permanent | the binding says no |
| blocked, score, hook | | | |
| frequency | 0x65 ESME_RX_P_APPN | permanent | resending only refills `max_sms` |
| no_party | 0x65 ESME_RX_P_APPN | permanent | AXN without A (0x64 was resent for ever) |
| no_extension | 0x0B ESME_RINVDSTADR | permanent | a text cannot key an extension |
| invalid_source | 0x0A ESME_RINVSRCADR | permanent | |
| invalid_destination | 0x0B ESME_RINVDSTADR | permanent | |
| undecodable | 0x65 ESME_RX_P_APPN | permanent | |
| forward_failed | 0x45 ESME_RSUBMITFAIL | permanent | the far side refused this message |
| quiet_hours | 0x64 ESME_RX_T_APPN | temporary | delivered once the window ends |
| no_route | 0x64 ESME_RX_T_APPN | temporary | far side not bound or upstream down |

A gateway's resend of a refused message is recognised (`relay.sms.retries`) and
counted on the first attempt's record instead of writing a new one.
"""

from __future__ import annotations

from typing import NamedTuple

from dialplan.refusals import REFUSALS
from relay.sms import constants as c

__all__ = ["SMS_REFUSALS", "TEMPORARY_STATUSES", "SmsRefusal", "is_temporary"]

# Statuses gateways queue and resend (Kannel `smpp_status_to_smscconn_failure_reason`).
TEMPORARY_STATUSES = frozenset({c.ESME_RSYSERR, c.ESME_RMSGQFUL, c.ESME_RTHROTTLED,
                                c.ESME_RX_T_APPN})

# Where SMS differs from dialplan.refusals' SMPP column.
_SMS_STATUS = {
    "no_party": c.ESME_RX_P_APPN,
}


class SmsRefusal(NamedTuple):
    """One reason's SMS answers."""

    command_status: int
    http: int
    temporary: bool


def is_temporary(command_status: int) -> bool:
    """True if gateways queue and resend a message refused with `command_status`."""
    return command_status in TEMPORARY_STATUSES


def _build() -> dict[str, SmsRefusal]:
    out = {}
    for reason, r in REFUSALS.items():
        status = _SMS_STATUS.get(reason, r.smpp)
        out[reason] = SmsRefusal(status, r.http, is_temporary(status))
    return out


SMS_REFUSALS: dict[str, SmsRefusal] = _build()
