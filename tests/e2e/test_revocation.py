"""A user's tokens stop working when the user is suspended or deleted, or their
roles change (issue 7):
user-service's event reaches the gateway through RabbitMQ, and every gateway
instance refuses tokens issued before it (a mark in Redis), on every route and on
the live channels, and so does the TCP feed. Tokens from a log in after reactivation work."""

import time

import httpx

from devstack.accounts import Account, login
from devstack.live import Chat, Terminal
from devstack.testing import wait_for


def refused(gateway: httpx.Client, account: Account) -> bool:
    response = gateway.get("/api/orders", headers=account.headers)  # answers a deleted user too
    if response.status_code == 200:
        return False
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "token revoked"
    return True


def relogin(gateway: httpx.Client, account: Account, *, after: float) -> Account:
    """A new token for ``account``, issued in a later whole second than ``after``
    (tokens carry whole seconds; one from the same second counts as revoked)."""
    wait_for(lambda: time.time() >= int(after) + 1, timeout=2, what="the next second")
    return Account(
        account.id, account.email, account.password, login(gateway, email=account.email, password=account.password)
    )


def test_a_suspended_users_tokens_stop_working_everywhere_and_a_new_log_in_works_after(
    gateway, target, admin, new_account
):
    ann = new_account("Ann")
    assert not refused(gateway, ann)
    suspended = gateway.patch(f"/api/users/{ann.id}", json={"status": "SUSPENDED"}, headers=admin.headers)
    assert suspended.status_code == 200, suspended.text
    suspended_by = time.time()
    wait_for(lambda: refused(gateway, ann), timeout=30, what="the gateway to refuse the suspended user's token")
    assert gateway.get("/api/users/me", headers=ann.headers).status_code == 401
    assert gateway.post("/api/auth/ticket", headers=ann.headers).status_code == 401
    with Chat(target.gateway_url, account=ann) as chat:
        assert chat.close_code() == 1008
    target.need("stack")
    terminal = Terminal(target.stack.port("notification-service", 9000))
    try:
        assert terminal.receive()["type"] == "welcome"
        terminal.send({"type": "auth", "token": ann.token})
        assert terminal.receive() == {"type": "error", "detail": "not authenticated: token revoked"}
    finally:
        terminal.close()
    assert gateway.get("/api/users/me", headers=admin.headers).status_code == 200  # others are not affected

    active = gateway.patch(f"/api/users/{ann.id}", json={"status": "ACTIVE"}, headers=admin.headers)
    assert active.status_code == 200, active.text
    again = relogin(gateway, ann, after=suspended_by)
    wait_for(lambda: not refused(gateway, again), timeout=10, what="a token issued after reactivation to work")
    assert refused(gateway, ann)  # the old one stays dead


def test_a_deleted_users_token_stops_working(gateway, new_account):
    bob = new_account("Bob")
    assert gateway.delete(f"/api/users/{bob.id}", headers=bob.headers).status_code == 204
    wait_for(lambda: refused(gateway, bob), timeout=30, what="the gateway to refuse the deleted user's token")


def test_a_role_change_ends_the_users_tokens_so_a_demoted_admin_is_no_admin(gateway, admin, new_account):
    cy = new_account("Cy")
    promoted = gateway.patch(f"/api/users/{cy.id}", json={"roles": ["admin", "user"]}, headers=admin.headers)
    assert promoted.status_code == 200, promoted.text
    changed_at = time.time()
    wait_for(lambda: refused(gateway, cy), timeout=30, what="the token from before the promotion to end")
    cy_admin = relogin(gateway, cy, after=changed_at)
    wait_for(
        lambda: gateway.get("/api/users", headers=cy_admin.headers).status_code == 200,
        timeout=10,
        what="the new token to be an admin's",
    )

    demoted = gateway.patch(f"/api/users/{cy.id}", json={"roles": ["user"]}, headers=admin.headers)
    assert demoted.status_code == 200, demoted.text
    changed_at = time.time()
    wait_for(lambda: refused(gateway, cy_admin), timeout=30, what="the admin token to end with the demotion")
    assert gateway.get("/api/users", headers=cy_admin.headers).status_code == 401
    cy_user = relogin(gateway, cy, after=changed_at)
    wait_for(lambda: not refused(gateway, cy_user), timeout=10, what="a token from after the demotion to work")
    assert gateway.get("/api/users", headers=cy_user.headers).status_code == 403
