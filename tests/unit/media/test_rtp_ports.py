"""Port pool (relay/rtp/ports.py)."""

from __future__ import annotations

import pytest

from relay.rtp.ports import PortPool, PortPoolError, PortsExhausted


def test_allocates_even_pairs_until_exhausted() -> None:
    pool = PortPool(20001, 20009)  # pairs 20002/3, 20004/5, 20006/7, 20008/9
    got = [pool.allocate() for _ in range(4)]
    assert got == [20002, 20004, 20006, 20008]
    assert pool.available == 0 and pool.in_use == 4
    with pytest.raises(PortsExhausted):
        pool.allocate()


def test_release_exactly_once_and_reuse_last() -> None:
    pool = PortPool(30000, 30005)
    a = pool.allocate()
    b = pool.allocate()
    pool.release(a)
    with pytest.raises(PortPoolError):
        pool.release(a)
    with pytest.raises(PortPoolError):
        pool.release(31000)
    assert pool.allocate() == 30004  # released ports go to the back of the queue
    assert pool.allocate() == a
    assert b == 30002


def test_bad_ranges() -> None:
    with pytest.raises(ValueError):
        PortPool(5000, 4000)
    with pytest.raises(ValueError):
        PortPool(5001, 5002)  # 5002 has no 5003
