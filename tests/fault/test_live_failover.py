"""SIGKILL one of the two notification-service instances while clients are
connected. Their event streams and sockets end; they reconnect through the gateway,
which sends them to the instance that is left; with Last-Event-ID the streams miss
no notification and see none twice, and the chat works again after a rejoin."""

from collections import Counter
from contextlib import ExitStack

from websockets.exceptions import ConnectionClosed

from devstack.accounts import Account, register
from devstack.liveclients import Chat, Follower
from devstack.shop import NOTIFICATION_INSTANCES, Shop
from devstack.testing import metric


def open_here(shop: Shop, instance: str) -> float:
    """The SSE streams and WebSockets open on one notification instance."""
    url = shop.stack.url(instance, 8003)
    return sum(metric(url, "notification_live_connections", {"kind": kind}) or 0.0 for kind in ("sse", "websocket"))


def rejoined(shop: Shop, account: Account, chat: Chat, room: str, exits: ExitStack) -> tuple[Chat, bool]:
    """The chat itself if it still answers, else a new one in the room (and True)."""
    try:
        chat.send({"type": "ping"})
        chat.receive_type("pong")
        return chat, False
    except ConnectionClosed:
        assert chat.connection.close_code == 1012, chat.connection.close_code  # "service restart": reconnect
    fresh = exits.enter_context(Chat(shop.stack.url("gateway", 8080), account=account))
    fresh.receive_type("welcome")
    fresh.send({"type": "join_room", "room": room})
    fresh.receive_type("user_joined")
    return fresh, True


def test_clients_of_a_killed_instance_reconnect_to_the_other_and_miss_nothing(shop):
    me, friend = register(shop.gateway), register(shop.gateway)
    room = "failover"
    with ExitStack() as exits:
        followers = [Follower(shop.gateway, me) for _ in range(2)]
        for follower in followers:
            exits.callback(follower.close)
        chats = []
        for account in (me, friend):
            chat = exits.enter_context(Chat(shop.stack.url("gateway", 8080), account=account))
            chat.receive_type("welcome")
            chat.send({"type": "join_room", "room": room})
            chat.receive_type("user_joined")
            chats.append(chat)
        first = shop.place(me).json()["id"]
        assert [follower.orders(1) for follower in followers] == [[first], [first]]

        # The gateway picks an instance at random for each: kill the one holding more.
        held = {instance: open_here(shop, instance) for instance in NOTIFICATION_INSTANCES}
        killed = max(held, key=lambda instance: held[instance])
        assert sum(held.values()) == 4, held
        shop.stack.native.kill(killed)
        during = [shop.place(me).json()["id"] for _ in range(3)]

        for follower in followers:
            got = follower.orders(3)
            assert Counter(got) == Counter(during), got  # each once, none missing
        (mine, cut_mine), (theirs, cut_theirs) = (
            rejoined(shop, account, chat, room, exits) for account, chat in zip((me, friend), chats, strict=True)
        )
        cut = sum(f.reconnects for f in followers) + cut_mine + cut_theirs
        assert cut >= 1, "no connection was on the killed instance: the test proved nothing"

        mine.send({"type": "room_message", "room": room, "message": "still here?"})
        heard = theirs.receive_type("room_message")
        assert (heard["from"], heard["message"]) == (me.id, "still here?")

    shop.stack.native.restart(killed)
