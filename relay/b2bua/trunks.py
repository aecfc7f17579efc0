"""Outbound trunks: which one a callee leg goes to, in what order, and which are up.

Sans-IO. A call gets a plan when its first callee INVITE goes out: the trunks that are
up, by priority, weighted-random within a priority (RFC 2782's rule, which RFC 3263
applies to SRV targets and operators apply to trunk lists alike), then the trunks
marked down as a last resort. A callee leg that fails with 408, 503 or a transport
error before anything rang moves the call to the next target of its plan (RFC 3263
§4.3), and marks that target down until a probe says otherwise. Up and down are kept
per target (an address a trunk's name resolved to, an SRV target say), not per trunk:
within a trunk the targets that are up come first, so one dead SRV target costs the
next call nothing, and a trunk is down only when all its targets are. Probes are
OPTIONS sent by the call map to every target every `probe_interval`; any answer but
503 is "up".

A trunk named by host name has no address until the adapter resolves it (RFC 3263,
relay.io.dns) and calls :meth:`TrunkSet.set_targets`: the call path never waits on DNS.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["FAILOVER_CODES", "Trunk", "TrunkSet", "parse_trunks"]

log = logging.getLogger("relay.sip")

Address = tuple[str, int]

#: Callee statuses that send the call to the next trunk (RFC 3263 §4.3: 503 and
#: timeouts; 408 is our Timer B). A 500 is the callee's answer, not the trunk's state.
FAILOVER_CODES = frozenset({408, 503})


@dataclass(slots=True)
class Trunk:
    """One outbound destination."""

    name: str
    host: str  # an IP address or a DNS name (resolved by the adapter)
    port: int | None = None
    priority: int = 1  # lower first
    weight: int = 1  # share within a priority; 0 only when nothing else is left
    targets: list[Address] = field(default_factory=list)
    down: dict[Address, str] = field(default_factory=dict)  # target -> why it is down
    calls: int = 0  # INVITEs sent to it (metrics)
    failovers: int = 0  # calls it failed over from

    @property
    def address(self) -> Address | None:
        """Where its INVITEs go first (the first resolved target that is up), or None."""
        order = self.ordered_targets()
        return order[0] if order else None

    @property
    def up(self) -> bool:
        """Some target is up (or none was marked down)."""
        return not self.down or any(a not in self.down for a in self.targets)

    def ordered_targets(self) -> list[Address]:
        """Its targets in the resolver's order, those marked down last."""
        if not self.down:
            return list(self.targets)
        return ([a for a in self.targets if a not in self.down]
                + [a for a in self.targets if a in self.down])

    @property
    def numeric(self) -> bool:
        """Its host is an IP literal (needs no resolution)."""
        try:
            ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return False
        return True


def parse_trunks(items: Iterable[dict[str, object]]) -> list[Trunk]:
    """`[[sip.trunk]]` tables -> trunks; a bad entry is a ValueError naming it."""
    out: list[Trunk] = []
    for i, item in enumerate(items):
        where = f"[[sip.trunk]] #{i + 1}"
        unknown = set(item) - {"name", "host", "port", "priority", "weight"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        host = item.get("host")
        if not isinstance(host, str) or not host:
            raise ValueError(f"{where}: host is required (an address or a DNS name)")
        port = item.get("port")
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise ValueError(f"{where}: port must be 1-65535")
        prio, weight = item.get("priority", 1), item.get("weight", 1)
        if not isinstance(prio, int) or prio < 0 or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"{where}: priority and weight are integers >= 0")
        name = str(item.get("name") or f"{host}:{port or 5060}")
        if any(t.name == name for t in out):
            raise ValueError(f"{where}: duplicate trunk name {name!r}")
        trunk = Trunk(name, host, port, prio, weight)
        if trunk.numeric:
            trunk.targets = [(host.strip("[]"), port or 5060)]
        out.append(trunk)
    return out


class TrunkSet:
    """The outbound trunks of a node and their state."""

    def __init__(self, trunks: Sequence[Trunk],
                 rand: Callable[[], float] = random.random) -> None:
        if not trunks:
            raise ValueError("at least one outbound trunk is needed")
        self.trunks = list(trunks)
        self._rand = rand
        self.by_name = {t.name: t for t in self.trunks}
        self._hosts: frozenset[str] | None = None

    @classmethod
    def single(cls, address: Address) -> TrunkSet:
        """The one trunk of `--outbound HOST:PORT`."""
        return cls([Trunk(f"{address[0]}:{address[1]}", address[0], address[1],
                          targets=[address])])

    def plan(self) -> list[tuple[Trunk, Address]]:
        """The order in which a new call tries the trunks (see the module docstring),
        each trunk with every address its name resolved to, in the resolver's order
        (RFC 3263 §4.3: the next SRV target before the next trunk), those of its
        targets marked down last."""
        usable = [t for t in self.trunks if t.targets]
        up = [t for t in usable if t.up]
        down = [t for t in usable if not t.up]
        order = self._ordered(up) + sorted(down, key=lambda t: t.priority)
        return [(t, address) for t in order for address in t.ordered_targets()]

    def _ordered(self, trunks: list[Trunk]) -> list[Trunk]:
        out: list[Trunk] = []
        for prio in sorted({t.priority for t in trunks}):
            group = [t for t in trunks if t.priority == prio]
            while len(group) > 1:
                # RFC 2782: a running sum against a uniform pick; weight-0 trunks are
                # picked only once every weighted one is placed, then in order.
                total = sum(t.weight for t in group)
                if total == 0:
                    break  # the rest in order, below
                pick = self._rand() * total
                acc = 0.0
                for chosen in group:
                    acc += chosen.weight
                    if chosen.weight and pick < acc:
                        break
                group.remove(chosen)
                out.append(chosen)
            out.extend(group)
        return out

    def set_targets(self, name: str, targets: list[Address]) -> None:
        """The adapter resolved a trunk's host (RFC 3263): its addresses, best first."""
        trunk = self.by_name.get(name)
        if trunk is not None:
            trunk.targets = list(targets)
            # A target still resolved keeps its state; one no longer named is forgotten.
            trunk.down = {a: why for a, why in trunk.down.items() if a in trunk.targets}
            self._hosts = None

    def mark(self, trunk: Trunk, up: bool, reason: str = "",
             target: Address | None = None) -> None:
        """A probe's answer (or a call's failure) sets one target of `trunk` up or down
        (without `target`: every target)."""
        for address in [target] if target is not None else list(trunk.targets):
            was_up = address not in trunk.down
            if up:
                trunk.down.pop(address, None)
            else:
                trunk.down[address] = reason
            if was_up != up:  # operators hear of a change, not of every probe
                (log.info if up else log.warning)(
                    "trunk %s target %s:%s is %s%s", trunk.name, address[0], address[1],
                    "up" if up else "down", "" if up else f": {reason}")

    def hosts(self) -> frozenset[str]:
        """Every address the outbound trunks resolve to (exempt from rate limits)."""
        if self._hosts is None:
            self._hosts = frozenset(ip for t in self.trunks for ip, _port in t.targets)
        return self._hosts

    def names(self) -> list[str]:
        """Every trunk's name, in configuration order."""
        return [t.name for t in self.trunks]
