"""The asyncio adapter's eager media jobs: a job that suspends is finished in a task."""

from __future__ import annotations

import asyncio

import pytest

from relay.io.sip import _resume


async def _suspends(log: list[str]) -> int:
    fut = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, fut.set_result, 7)
    log.append("before")
    value = await fut
    await asyncio.sleep(0)  # a bare yield
    await asyncio.sleep(0.005)
    log.append("after")
    return value


async def test_resume_finishes_a_suspended_coroutine_and_calls_after() -> None:
    log: list[str] = []
    coro = _suspends(log)
    first = coro.send(None)  # the eager start, as SipServer._start_job does
    assert log == ["before"]
    await asyncio.get_running_loop().create_task(
        _resume(coro, first, lambda: log.append("flushed")))
    assert log == ["before", "after", "flushed"]


async def _fails() -> None:
    fut = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, fut.set_exception, OSError("no port"))
    await fut


async def test_resume_passes_errors_into_the_coroutine() -> None:
    coro = _fails()
    first = coro.send(None)
    flushed: list[bool] = []
    with pytest.raises(OSError, match="no port"):
        await _resume(coro, first, lambda: flushed.append(True))
    assert flushed == [True]


async def test_the_adapter_reports_how_long_sip_waited_in_the_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from relay.b2bua.callmap import CallMap, Settings
    from relay.b2bua.overload import OverloadGuard
    from relay.bindings.table import BindingTable
    from relay.io.sip import SipServer

    seen: list[float] = []
    monkeypatch.setattr(OverloadGuard, "observe_delay", lambda _self, s: seen.append(s))
    monkeypatch.setattr(SipServer, "_sample_lag", lambda _self: None)  # the socket's only
    switch = CallMap(Settings(), BindingTable())
    server = SipServer(switch, None, lambda _rec: None)  # type: ignore[arg-type]
    udp = SipServer.bind_udp("127.0.0.1", 0)
    await server.start(udp, tcp=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        # Linux turns receive stamps on for the whole host by deferred work (a static
        # key); until it runs, an unstamped datagram is stamped when read. When no
        # other process stamps, a first datagram can read 0: prime, then measure.
        for _ in range(20):
            peer.sendto(b"OPTIONS garbage\r\n\r\n", udp.getsockname())
            time.sleep(0.02)
            await asyncio.sleep(0.02)
            if seen and seen[-1] >= 0.015:
                break
        seen.clear()
        peer.sendto(b"OPTIONS garbage\r\n\r\n", udp.getsockname())
        time.sleep(0.15)  # the loop is busy elsewhere: the datagram waits in the kernel
        await asyncio.sleep(0.08)  # read it, and let the lag sampler tick
    assert len(seen) == 1 and 0.14 <= seen[0] < 1.0  # from the kernel's arrival stamp
    await server.close()
