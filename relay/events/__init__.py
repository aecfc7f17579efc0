"""Events (DESIGN.md "Events"): what happened, kept in a durable outbox and pushed
by one webhook sender (`relay.events.sender`); built from call and message records by
`relay.events.build`, wired into a node by `relay.events.service`."""
