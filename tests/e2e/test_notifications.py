"""An order's path through every link: gateway → order-service → event-store →
RabbitMQ → notification-service → SMTP, and back to the user as a notification.

Mail is read from the stack's own SMTP sink (a real SMTP server, devstack.mailsink).
Everything is waited for, never slept for.
"""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from devstack.mailsink import body_of
from devstack.testing import wait_for

ITEMS = [{"sku": "LAMP-3", "quantity": 1, "unit_price": "39.90"}]


def place(gateway, account, *, key=None, items=ITEMS):
    headers = {**account.headers, **({"Idempotency-Key": key} if key else {})}
    response = gateway.post("/api/orders", json={"items": items}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def mail_about(target, address, order_id):
    def found():
        return [m for m in target.mail.to(address) if order_id in body_of(m)]

    return wait_for(found, timeout=20, what=f"a mail to {address} about order {order_id}")


def notifications(gateway, account):
    response = gateway.get("/api/notifications", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def backbone(target):
    target.need("mail", "rabbitmq_url", "events_exchange")
    return target


def test_placing_an_order_sends_a_confirmation_mail_and_a_notification(gateway, new_account, backbone):
    me = new_account("Ada Lovelace")
    order = place(gateway, me)
    [mail] = mail_about(backbone, me.email, order["id"])
    assert "confirm" in str(mail["Subject"]).lower()
    assert "39.90" in body_of(mail)
    listed = wait_for(
        lambda: [n for n in notifications(gateway, me)["items"] if n["data"].get("order_id") == order["id"]],
        timeout=10,
        what="the order's notification",
    )
    assert [n["type"] for n in listed] == ["order.placed"]


def test_the_mail_greets_a_name_with_joiners_as_it_was_typed(gateway, new_account, backbone):
    # A name with ZERO WIDTH JOINERs, non-ASCII letters and a comma: one recipient,
    # the name unchanged (RFC 2047 encoded words in the header).
    name = "Zoë\u200d👩\u200d💻, victim@example.org"
    me = new_account(name)
    order = place(gateway, me)
    [mail] = mail_about(backbone, me.email, order["id"])
    assert [(a.display_name, a.addr_spec) for a in mail["To"].addresses] == [(name, me.email)]
    assert f"Hello {name}," in body_of(mail)


def test_cancelling_sends_a_cancellation_mail(gateway, new_account, backbone):
    me = new_account()
    order = place(gateway, me)
    mail_about(backbone, me.email, order["id"])
    gateway.post(f"/api/orders/{order['id']}/cancel", headers=me.headers, json={"reason": "too late"})
    mails = wait_for(
        lambda: [m for m in backbone.mail.to(me.email) if "cancel" in str(m["Subject"]).lower()],
        timeout=20,
        what="the cancellation mail",
    )
    assert len(mails) == 1
    assert order["id"] in body_of(mails[0])


def test_one_idempotency_key_sent_again_and_concurrently_gives_one_order_and_one_mail(gateway, new_account, backbone):
    me = new_account()
    key = f"key-{uuid.uuid4()}"
    sequential = [place(gateway, me, key=key) for _ in range(3)]
    concurrent_key = f"key-{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(lambda _: place(gateway, me, key=concurrent_key), range(3)))
    assert len({o["id"] for o in sequential}) == 1
    assert len({o["id"] for o in concurrent}) == 1
    # A later order's mail is the barrier: mails are sent in the order of the events.
    barrier = place(gateway, me)
    mail_about(backbone, me.email, barrier["id"])
    bodies = [body_of(m) for m in backbone.mail.to(me.email)]
    assert sum(sequential[0]["id"] in body for body in bodies) == 1
    assert sum(concurrent[0]["id"] in body for body in bodies) == 1
    assert len(bodies) == 3


def test_dead_letters_are_for_admins_only(gateway, new_account):
    me = new_account()
    assert gateway.get("/api/admin/dead-letters", headers=me.headers).status_code == 403
    letter = uuid.uuid4()
    assert gateway.post(f"/api/admin/dead-letters/{letter}/replay", headers=me.headers).status_code == 403
    assert gateway.delete(f"/api/admin/dead-letters/{letter}", headers=me.headers).status_code == 403


def test_discarding_an_unknown_dead_letter_is_not_found(gateway, admin):
    assert gateway.delete(f"/api/admin/dead-letters/{uuid.uuid4()}", headers=admin.headers).status_code == 404
