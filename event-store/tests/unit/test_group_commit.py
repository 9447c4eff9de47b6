"""Group commit's queue on its own, with a writer the test opens and closes by hand."""

import asyncio

import pytest

from event_store.adapters.group_commit import GroupCommit


class Writer:
    """Records each group it is given and answers it when the test says so."""

    def __init__(self):
        self.groups = []
        self._gates = []
        self.started = asyncio.Event()

    async def write(self, group):
        gate = asyncio.Event()
        self.groups.append([member.item for member in group])
        self._gates.append(gate)
        self.started.set()
        await gate.wait()
        for member in group:
            if member.item == "bad":
                member.fail(ValueError("bad"))
            else:
                member.succeed(f"{member.item}!")

    def open(self, index):
        self._gates[index].set()


def queue(writer, *, writers=1, large_writers=0, large=100, max_size=10):
    return GroupCommit(
        write=writer.write,
        key=lambda item: item.split("/")[0],
        size=lambda item: int(item.split("/")[1]) if "/" in item else 1,
        max_size=max_size,
        writers=writers,
        large_writers=large_writers,
        large=large,
    )


async def settle():
    """Let every task that can run, run (no real time passes: nothing here sleeps)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_lone_item_goes_out_at_once_and_alone():
    writer = Writer()
    commits = queue(writer)
    answer = asyncio.create_task(commits.submit("a"))
    await settle()
    assert writer.groups == [["a"]]
    writer.open(0)
    assert await answer == "a!"


async def test_what_arrives_while_the_writer_is_busy_goes_out_together_in_order():
    writer = Writer()
    commits = queue(writer)
    first = asyncio.create_task(commits.submit("a"))
    await settle()
    rest = [asyncio.create_task(commits.submit(item)) for item in ("b", "c", "bad", "d")]
    await settle()
    assert commits.waiting == 4
    writer.open(0)
    await settle()
    assert writer.groups == [["a"], ["b", "c", "bad", "d"]]
    writer.open(1)
    assert await first == "a!"
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[:2] == ["b!", "c!"]
    assert isinstance(results[2], ValueError)  # one member's failure is its own
    assert results[3] == "d!"


async def test_an_item_whose_key_is_being_written_waits_for_the_next_group():
    writer = Writer()
    commits = queue(writer, writers=2)
    first = asyncio.create_task(commits.submit("s1"))
    await settle()
    second = asyncio.create_task(commits.submit("s1"))
    other = asyncio.create_task(commits.submit("s2"))
    await settle()
    assert writer.groups == [["s1"], ["s2"]]  # a writer was free, but not for s1
    writer.open(0)
    await settle()
    assert writer.groups == [["s1"], ["s2"], ["s1"]]
    writer.open(1)
    writer.open(2)
    assert list(await asyncio.gather(first, second, other)) == ["s1!", "s1!", "s2!"]


async def test_groups_stop_at_max_size_and_an_oversized_item_goes_alone():
    writer = Writer()
    commits = queue(writer, max_size=10)
    plug = asyncio.create_task(commits.submit("p"))
    await settle()
    items = ["a/4", "b/4", "c/4", "d/30", "e/1"]
    answers = [asyncio.create_task(commits.submit(item)) for item in items]
    await settle()
    for index in range(4):
        writer.open(index)
        await settle()
    assert writer.groups == [["p"], ["a/4", "b/4"], ["c/4"], ["d/30"], ["e/1"]][: len(writer.groups)]
    writer.open(4)
    await asyncio.gather(plug, *answers)
    assert writer.groups == [["p"], ["a/4", "b/4"], ["c/4"], ["d/30"], ["e/1"]]


async def test_large_groups_get_writers_of_their_own_and_small_ones_wait():
    writer = Writer()
    commits = queue(writer, writers=1, large_writers=2, large=50, max_size=1000)
    tasks = [asyncio.create_task(commits.submit("small"))]
    await settle()
    tasks.append(asyncio.create_task(commits.submit("tiny")))
    await settle()
    assert writer.groups == [["small"]]  # too small for a large group's writer
    tasks += [asyncio.create_task(commits.submit(item)) for item in ("x/60", "y/60")]
    await settle()
    # Large enough together: tiny and x go out beside small; y too, alone.
    assert writer.groups == [["small"], ["tiny", "x/60"], ["y/60"]]
    tasks.append(asyncio.create_task(commits.submit("z/60")))
    await settle()
    assert commits.waiting == 1  # every writer busy
    writer.open(0)
    await settle()
    assert writer.groups[-1] == ["z/60"]
    for index in range(1, 4):
        writer.open(index)
    assert await asyncio.gather(*tasks) == ["small!", "tiny!", "x/60!", "y/60!", "z/60!"]


async def test_a_submitter_that_gave_up_before_its_group_was_taken_is_left_out():
    writer = Writer()
    commits = queue(writer)
    plug = asyncio.create_task(commits.submit("p"))
    await settle()
    gave_up = asyncio.create_task(commits.submit("gone"))
    stays = asyncio.create_task(commits.submit("stays"))
    await settle()
    gave_up.cancel()
    await settle()
    writer.open(0)
    await settle()
    assert writer.groups == [["p"], ["stays"]]
    writer.open(1)
    assert list(await asyncio.gather(plug, stays)) == ["p!", "stays!"]
    with pytest.raises(asyncio.CancelledError):
        await gave_up


async def test_a_writer_that_fails_fails_its_whole_group_and_the_next_group_still_goes():
    calls = []

    async def write(group):
        calls.append([member.item for member in group])
        if len(calls) == 1:
            raise RuntimeError("the writer broke")
        for member in group:
            member.succeed(member.item)

    commits = GroupCommit(write=write, key=str, size=len, max_size=10, writers=1, large_writers=0, large=10)
    results = await asyncio.gather(commits.submit("a"), commits.submit("b"), return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1] == "b"
