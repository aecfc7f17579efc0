"""How a forwarded text leaves the relay, by name (`[sms] route`).

- `gateway`: deliver_sm on a bound RX/TRX link (the configured gateway, else the one the
  text came in on);
- `upstream`: submit_sm to the upstream SMSC (`[smpp.upstream]`), a receipt asked for;
- `webhook`: a signed POST to `[sms] webhook_url`, retried from a durable queue.

The implementations are chosen from a table keyed by these names in
`relay.io.sms_service`; the settings take the allowed names from here (no I/O imported).
"""

ROUTES: tuple[str, ...] = ("gateway", "upstream", "webhook")
