"""The route table: every public endpoint the gateway forwards, and where to.

One row per endpoint of docs/api.md served by an upstream HTTP API. Order matters where
paths overlap: ``/api/users/me`` stands before ``/api/users/{user_id}``.
"""

from gateway.domain.model import Access, Route

USERS = "users"
ORDERS = "orders"
NOTIFICATIONS = "notifications"

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/auth/register", USERS, "/internal/users", Access.PUBLIC, "auth", "Register a user"),
    Route("POST", "/api/auth/token", USERS, "/internal/auth/token", Access.PUBLIC, "auth", "Log in: get a token"),
    Route("GET", "/.well-known/jwks.json", USERS, "/.well-known/jwks.json", Access.PUBLIC, summary="Token keys"),
    Route("GET", "/api/users/me", USERS, "/internal/users/{actor_id}", Access.USER, summary="The caller"),
    Route("GET", "/api/users", USERS, "/internal/users", Access.ADMIN, summary="List users (admin)"),
    Route("GET", "/api/users/{user_id}", USERS, "/internal/users/{user_id}", Access.USER, summary="A user"),
    Route("PATCH", "/api/users/{user_id}", USERS, "/internal/users/{user_id}", Access.USER, summary="Change a user"),
    Route("DELETE", "/api/users/{user_id}", USERS, "/internal/users/{user_id}", Access.USER, summary="Delete a user"),
    Route("POST", "/api/orders", ORDERS, "/internal/orders", Access.USER, summary="Place an order"),
    Route("GET", "/api/orders", ORDERS, "/internal/orders", Access.USER, summary="The caller's orders"),
    Route("GET", "/api/orders/{order_id}", ORDERS, "/internal/orders/{order_id}", Access.USER, summary="An order"),
    Route(
        "POST",
        "/api/orders/{order_id}/cancel",
        ORDERS,
        "/internal/orders/{order_id}/cancel",
        Access.USER,
        summary="Cancel an order",
    ),
    Route(
        "POST",
        "/api/orders/{order_id}/confirm",
        ORDERS,
        "/internal/orders/{order_id}/confirm",
        Access.ADMIN,
        summary="Confirm an order (admin)",
    ),
    Route(
        "POST",
        "/api/orders/{order_id}/ship",
        ORDERS,
        "/internal/orders/{order_id}/ship",
        Access.ADMIN,
        summary="Ship an order (admin)",
    ),
    Route(
        "GET",
        "/api/orders/{order_id}/events",
        ORDERS,
        "/internal/orders/{order_id}/events",
        Access.USER,
        summary="An order's event history",
    ),
    Route(
        "GET",
        "/api/notifications",
        NOTIFICATIONS,
        "/internal/notifications",
        Access.USER,
        summary="The caller's notifications",
    ),
    Route(
        "GET",
        "/api/admin/dead-letters",
        NOTIFICATIONS,
        "/internal/admin/dead-letters",
        Access.ADMIN,
        summary="Messages that exhausted their retries (admin)",
    ),
    Route(
        "POST",
        "/api/admin/dead-letters/{letter_id}/replay",
        NOTIFICATIONS,
        "/internal/admin/dead-letters/{letter_id}/replay",
        Access.ADMIN,
        summary="Replay a dead letter (admin)",
    ),
    Route(
        "DELETE",
        "/api/admin/dead-letters/{letter_id}",
        NOTIFICATIONS,
        "/internal/admin/dead-letters/{letter_id}",
        Access.ADMIN,
        summary="Discard a dead letter (admin)",
    ),
    Route(
        "GET",
        "/api/admin/parked-events",
        ORDERS,
        "/internal/admin/parked-events",
        Access.ADMIN,
        summary="Events the orders projection could not apply (admin)",
    ),
    Route(
        "POST",
        "/api/admin/parked-events/{parked_id}/replay",
        ORDERS,
        "/internal/admin/parked-events/{parked_id}/replay",
        Access.ADMIN,
        summary="Apply a parked event again (admin)",
    ),
    Route(
        "DELETE",
        "/api/admin/parked-events/{parked_id}",
        ORDERS,
        "/internal/admin/parked-events/{parked_id}",
        Access.ADMIN,
        summary="Skip a parked event (admin)",
    ),
)
