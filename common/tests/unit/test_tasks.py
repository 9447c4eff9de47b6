import asyncio

import pytest

from interchange_common import tasks


async def test_run_forever_keeps_going_after_a_thousand_failures(monkeypatch):
    async def no_pause(_seconds):
        return None

    monkeypatch.setattr("interchange_common.tasks.asyncio.sleep", no_pause)
    sessions = 0

    async def failing(connected):
        nonlocal sessions
        sessions += 1
        if sessions == 1500:
            raise asyncio.CancelledError
        raise ConnectionRefusedError

    with pytest.raises(asyncio.CancelledError):
        await tasks.run_forever(name="test", session=failing)
    assert sessions == 1500


async def test_cancel_and_wait_waits_for_all_and_logs_failures(caplog):
    async def fails():
        raise RuntimeError("broken")

    async def sleeps():
        await asyncio.Event().wait()

    broken, idle = asyncio.create_task(fails(), name="broken"), asyncio.create_task(sleeps(), name="idle")
    await asyncio.sleep(0)
    await tasks.cancel_and_wait([broken, idle])
    assert broken.done()
    assert idle.cancelled()
    assert any(record.message == "background task failed" for record in caplog.records)


async def test_run_forever_stops_when_a_session_turns_its_cancellation_into_an_error():
    started = asyncio.Event()

    async def session(connected):
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            raise ConnectionResetError("closing the client while cancelled")  # what some clients do

    task = asyncio.create_task(tasks.run_forever(name="stubborn", session=session))
    await started.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled(), "run_forever went on after it was cancelled"


async def test_every_runs_the_job_again_after_each_pause_and_after_failures(monkeypatch):
    pauses: list[float] = []

    async def no_pause(seconds):
        pauses.append(seconds)

    monkeypatch.setattr("interchange_common.tasks.asyncio.sleep", no_pause)
    runs = 0

    async def job():
        nonlocal runs
        runs += 1
        if runs == 2:
            raise ConnectionRefusedError  # the database was away for a moment
        if runs == 5:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await tasks.every(name="purge", seconds=600, job=job)
    assert runs == 5
    assert pauses.count(600) == 3  # after runs 1, 3 and 4; run 2's failure paused by backoff
