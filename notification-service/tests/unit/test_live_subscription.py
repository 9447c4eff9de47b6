"""A local live subscriber's ordering rules, with a fake hub for the stream: history
first, each notification once, a refill after the hub was away, a slow one dropped."""

import asyncio
import uuid
from typing import cast

import pytest

from notification_service.adapters.errors import LiveUnavailable
from notification_service.adapters.redis_fanout import LiveHub, Subscription
from notification_service.domain.errors import SubscriptionEnded
from notification_service.domain.live_push import BEFORE_ALL, TOO_SLOW, LiveFrame, LiveNotification, StreamId


def entry(ms):
    return LiveNotification(stream_id=StreamId(ms, 0), payload=b'{"n":%d}' % ms)


class FakeHub:
    """The stream of one user, and what the subscription asks of its hub."""

    def __init__(self):
        self.stream = []
        self.reads = 0
        self.fail = False
        self.block = None  # an Event a history read waits for
        self.dropped = []

    async def history(self, *, user_id, after):
        self.reads += 1
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            raise LiveUnavailable("down")
        return [item for item in self.stream if item.stream_id > after]

    def drop(self, subscription, *, reason):
        self.dropped.append(reason)
        subscription.end(reason)


def subscription_of(hub, *, cursor=BEFORE_ALL, queue_size=8):
    return Subscription(
        hub=cast(LiveHub, hub), user_id=uuid.uuid4(), client_id="c", cursor=cursor, queue_size=queue_size, private=True
    )


async def take(subscription, count):
    async with asyncio.timeout(2):
        return [await subscription.next() for _ in range(count)]


async def nothing_more(subscription):
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await subscription.next()
    return True


async def test_history_after_the_cursor_comes_first_then_live_without_duplicates():
    hub = FakeHub()
    hub.stream = [entry(1), entry(2), entry(3)]
    subscription = subscription_of(hub, cursor=StreamId(1, 0))
    # Published while the history was being read: already in it, and after it.
    for item in (entry(3), entry(4)):
        subscription.offer(item)
    hub.stream.append(entry(4))
    assert [item.stream_id.ms for item in await take(subscription, 3)] == [2, 3, 4]
    assert await nothing_more(subscription)
    assert subscription.cursor == StreamId(4, 0)


async def test_frames_pass_through_in_order():
    subscription = subscription_of(FakeHub())
    frames = [LiveFrame(data=b'{"type":"pong"}'), entry(5), LiveFrame(data=b'{"type":"error"}')]
    for item in frames:
        subscription.offer(item)
    assert await take(subscription, 3) == frames


async def test_a_refill_recovers_what_the_hub_missed():
    hub = FakeHub()
    subscription = subscription_of(hub)
    hub.stream = [entry(1)]
    subscription.offer(entry(1))
    assert await take(subscription, 1) == [entry(1)]
    hub.stream += [entry(2), entry(3)]  # published while the hub was not subscribed
    subscription.refill()
    subscription.offer(entry(3))  # heard live once the hub was back
    hub.stream.append(entry(4))
    subscription.offer(entry(4))
    assert [item.stream_id.ms for item in await take(subscription, 3)] == [2, 3, 4]
    assert await nothing_more(subscription)


async def test_a_subscriber_whose_queue_is_full_is_dropped():
    hub = FakeHub()
    subscription = subscription_of(hub, queue_size=2)
    assert subscription.offer(entry(1))
    assert subscription.offer(entry(2))
    assert not subscription.offer(entry(3))
    assert hub.dropped == [TOO_SLOW]
    assert subscription.ended.is_set()
    with pytest.raises(SubscriptionEnded, match=TOO_SLOW):
        await subscription.next()
    assert not subscription.offer(entry(4))


async def test_cancelling_next_during_a_history_read_loses_nothing():
    hub = FakeHub()
    hub.stream = [entry(1), entry(2)]
    hub.block = asyncio.Event()
    subscription = subscription_of(hub)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await subscription.next()
    hub.block.set()
    assert [item.stream_id.ms for item in await take(subscription, 2)] == [1, 2]


async def test_an_unreadable_stream_is_reported_and_read_again_next_time():
    hub = FakeHub()
    hub.stream = [entry(1)]
    hub.fail = True
    subscription = subscription_of(hub)
    with pytest.raises(LiveUnavailable):
        await subscription.next()
    hub.fail = False
    assert await take(subscription, 1) == [entry(1)]


async def test_take_nowait_hands_out_what_is_here_in_order_and_never_reads_the_stream():
    hub = FakeHub()
    hub.stream = [entry(1)]
    subscription = subscription_of(hub)
    subscription.offer(entry(2))
    assert subscription.take_nowait() is None  # the stream comes first: next reads it
    assert hub.reads == 0
    hub.stream.append(entry(2))
    assert await take(subscription, 1) == [entry(1)]
    frame = LiveFrame(data=b'{"type":"pong"}')
    for item in (entry(2), frame, entry(3)):
        subscription.offer(item)
    # entry(2) once, from the history; both its live copies are skipped.
    assert [subscription.take_nowait() for _ in range(4)] == [entry(2), frame, entry(3), None]
    assert hub.reads == 1


async def test_take_nowait_stops_at_a_refill_and_next_reads_the_stream_first():
    hub = FakeHub()
    subscription = subscription_of(hub)
    assert await nothing_more(subscription)
    hub.stream = [entry(1), entry(2)]
    subscription.refill()
    subscription.offer(entry(2))
    assert subscription.take_nowait() is None
    assert [item.stream_id.ms for item in await take(subscription, 2)] == [1, 2]
    assert subscription.take_nowait() is None  # entry(2) was a duplicate


async def test_what_is_taken_frees_its_place_and_what_is_not_still_counts():
    hub = FakeHub()
    subscription = subscription_of(hub, queue_size=2)
    assert await nothing_more(subscription)
    assert subscription.offer(entry(1))
    assert subscription.offer(entry(2))
    assert subscription.take_nowait() == entry(1)
    assert subscription.offer(entry(3))
    assert not subscription.offer(entry(4))
    assert hub.dropped == [TOO_SLOW]
    with pytest.raises(SubscriptionEnded, match=TOO_SLOW):
        subscription.take_nowait()


async def waiting_next(subscription):
    waiting = asyncio.ensure_future(subscription.next())
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done
    return waiting


async def test_a_waiting_next_is_woken_by_an_offer_and_by_the_end():
    subscription = subscription_of(FakeHub())
    waiting = await waiting_next(subscription)
    subscription.offer(entry(1))
    async with asyncio.timeout(2):
        assert await waiting == entry(1)
    waiting = await waiting_next(subscription)
    subscription.end("closed")
    with pytest.raises(SubscriptionEnded, match="closed"):
        async with asyncio.timeout(2):
            await waiting
