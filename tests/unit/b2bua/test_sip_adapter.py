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
