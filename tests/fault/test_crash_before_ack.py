"""notification-service is SIGKILLed after it committed an effect and before it acked
the message: RabbitMQ delivers the message again, and the restarted service has no
second effect (the event id was recorded with the effect)."""

from devstack.accounts import register
from devstack.testing import wait_for


def test_a_redelivered_event_sends_no_second_mail(shop):
    me = register(shop.gateway)
    # The switch makes the service SIGKILL itself right after the commit of an effect
    # that queued a mail (development only; see notification-service's settings).
    native = shop.stack.native
    # With the second instance gone, the one that crashes is the one that gets the message.
    native.kill("notification-service-2")
    native.restart("notification-service", environment={"CRASH_AFTER_COMMIT_BEFORE_ACK": "true"})
    placed = shop.place(me)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    wait_for(lambda: "notification-service" in native.exited(), timeout=30, what="notification-service to crash")

    native.restart("notification-service")  # the switch held for that run only
    shop.wait_for_mail(me.email, order_id)
    # A later order's mail is the barrier: by then the redelivery was handled.
    later = shop.place(me).json()["id"]
    shop.wait_for_mail(me.email, later)
    assert len(shop.mails_about(me.email, order_id)) == 1
    about_order = [n for n in shop.notifications(me) if n["data"].get("order_id") == order_id]
    assert [n["type"] for n in about_order] == ["order.placed"]
