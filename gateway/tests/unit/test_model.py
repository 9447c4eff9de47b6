import uuid
from datetime import UTC, datetime

import pytest

from gateway.domain.errors import AuthenticationFailed, Forbidden
from gateway.domain.model import Access, Principal, RateDecision, Route, revoked_at
from gateway.domain.routes import ROUTES

USER = Principal(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=0)
ADMIN = Principal(user_id=uuid.uuid4(), roles=frozenset({"admin", "user"}), expires_at=0)


def route(access, target="/internal/users/{user_id}"):
    return Route("GET", "/api/users/{user_id}", "users", target, access)


def test_public_routes_need_nobody():
    route(Access.PUBLIC).authorize(principal=None)


def test_user_routes_need_a_principal():
    with pytest.raises(AuthenticationFailed):
        route(Access.USER).authorize(principal=None)
    route(Access.USER).authorize(principal=USER)


def test_admin_routes_need_the_admin_role():
    with pytest.raises(Forbidden):
        route(Access.ADMIN).authorize(principal=USER)
    route(Access.ADMIN).authorize(principal=ADMIN)


def test_upstream_paths_take_path_parameters_and_the_actor():
    assert route(Access.USER).upstream_path(path_params={"user_id": "abc"}, principal=USER) == "/internal/users/abc"
    me = Route("GET", "/api/users/me", "users", "/internal/users/{actor_id}", Access.USER)
    assert me.upstream_path(path_params={}, principal=USER) == f"/internal/users/{USER.user_id}"


@pytest.mark.parametrize("value", ["..", ".", "a%2Fb", "a/b", "x?y=1", "", "a" * 129, "é"])
def test_unsafe_path_parameters_are_refused(value):
    assert route(Access.USER).upstream_path(path_params={"user_id": value}, principal=USER) is None


def test_rate_headers_say_when_to_retry_only_when_refused():
    allowed = RateDecision(allowed=True, limit=10, remaining=3, reset_seconds=20).headers()
    refused = RateDecision(allowed=False, limit=10, remaining=0, reset_seconds=20).headers()
    assert "Retry-After" not in allowed
    assert allowed["RateLimit-Remaining"] == "3"
    assert refused["Retry-After"] == "20"


def test_the_route_table_puts_me_before_the_id_route():
    paths = [(r.method, r.path) for r in ROUTES]
    assert paths.index(("GET", "/api/users/me")) < paths.index(("GET", "/api/users/{user_id}"))
    assert len(paths) == len(set(paths))


def test_a_trailing_newline_is_not_a_plain_segment():
    assert route(Access.USER).upstream_path(path_params={"user_id": "abc\n"}, principal=USER) is None


def user_event(kind: str, **data: object) -> dict[str, object]:
    return {"type": kind, "occurred_at": "2026-11-27T10:00:00.500Z", "data": {"id": "u", **data}}


def test_deleted_suspended_or_re_roled_users_tokens_end_at_the_event_and_others_do_not():
    at = datetime(2026, 11, 27, 10, 0, 0, 500_000, tzinfo=UTC).timestamp()
    assert revoked_at(user_event("user.deleted")) == at
    assert revoked_at(user_event("user.updated", status="SUSPENDED")) == at
    assert revoked_at(user_event("user.updated", status="ACTIVE", roles=["user"], changed=["roles"])) == at
    assert revoked_at(user_event("user.updated", status="ACTIVE", name="Renamed", changed=["name"])) is None
    assert revoked_at(user_event("user.created", status="ACTIVE")) is None
    assert revoked_at({"type": "order.placed", "data": {}}) is None
