"""One table of forged and broken tokens, refused at every door that takes a token.

User access tokens (RS256, signed with the stack's own key so that only the broken
part is wrong): the gateway's HTTP routes, its SSE stream and WebSocket, and the
TCP and UDP feeds. Service tokens (HS256 with the stack's shared secret): every
service's internal HTTP API and the gRPC services. A service token is tried as a
user token and an access token as a service token. Each door also takes one good
token, so a door that refused everything would fail here too.
"""

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.accounts import Account, register
from devstack.forgery import alg_none, hs256_signed, tampered
from devstack.liveclients import Chat, Device, EventStream, StreamEnded, Terminal
from interchange_common.contracts import eventstore_pb2, eventstore_pb2_grpc, user_pb2, user_pb2_grpc
from interchange_common.servicejwt import ServiceTokenIssuer

ISSUER, AUDIENCE = "interchange", "interchange-api"


@dataclass
class Keys:
    account: Account
    private_key: bytes
    kid: str
    public_pem: bytes
    service_secret: str

    def user_token(self, *, kid: str | None = None, key: Any = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": self.account.id, "iat": now, "exp": now + 600}
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(
            claims, key or self.private_key, algorithm="RS256", headers={"kid": kid or self.kid, "typ": "JWT"}
        )

    def service_token(self, *, audience: str, secret: str | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": "gateway", "sub": "gateway", "aud": audience, "iat": now, "exp": now + 600}
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(claims, secret or self.service_secret, algorithm="HS256")


def hs256_with_the_public_key(keys: Keys) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": keys.account.id, "iat": now, "exp": now + 600}
    return hs256_signed(body, secret=keys.public_pem, kid=keys.kid)


NOW = int(time.time())
USER_FORGERIES: dict[str, Callable[[Keys], str]] = {
    "alg-none": lambda k: alg_none(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": k.account.id, "iat": NOW, "exp": NOW + 600}, kid=k.kid
    ),
    "hs256-signed-with-the-public-key": hs256_with_the_public_key,
    "no-exp": lambda k: k.user_token(exp=None),
    "expired": lambda k: k.user_token(iat=NOW - 7200, exp=NOW - 3600),
    "iat-in-the-future": lambda k: k.user_token(iat=NOW + 3600, exp=NOW + 7200),
    "wrong-aud": lambda k: k.user_token(aud="another-api"),
    "no-aud": lambda k: k.user_token(aud=None),
    "wrong-iss": lambda k: k.user_token(iss="someone-else"),
    "unknown-kid": lambda k: k.user_token(
        kid="made-up", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ),
    "tampered-payload": lambda k: tampered(k.user_token(), roles=["admin"]),
    "a-service-token": lambda k: k.service_token(audience="gateway"),
}
SERVICE_FORGERIES: dict[str, Callable[[Keys, str], str]] = {
    "alg-none": lambda k, aud: alg_none({"iss": "gateway", "sub": "gateway", "aud": aud, "iat": NOW, "exp": NOW + 600}),
    "no-exp": lambda k, aud: k.service_token(audience=aud, exp=None),
    "expired": lambda k, aud: k.service_token(audience=aud, iat=NOW - 7200, exp=NOW - 3600),
    "iat-in-the-future": lambda k, aud: k.service_token(audience=aud, iat=NOW + 3600, exp=NOW + 7200),
    "wrong-aud": lambda k, aud: k.service_token(audience="another-service"),
    "no-aud": lambda k, aud: k.service_token(audience=aud, aud=None),
    "unknown-issuer": lambda k, aud: k.service_token(audience=aud, iss="mallory", sub="mallory"),
    "wrong-secret": lambda k, aud: k.service_token(audience=aud, secret="not-the-secret-" + "x" * 32),
    "tampered-payload": lambda k, aud: tampered(k.service_token(audience=aud), iss="user-service"),
    "a-users-access-token": lambda k, aud: k.account.token,
}


@pytest.fixture(scope="module")
def keys(target, gateway) -> Keys:
    target.need("signing_key", "service_jwt_secret", "ports")
    account = register(gateway, name="Token Table")
    kid = jwt.get_unverified_header(account.token)["kid"]
    published = next(k for k in gateway.get("/.well-known/jwks.json").json()["keys"] if k["kid"] == kid)
    public_pem = RSAAlgorithm.from_jwk(json.dumps(published)).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(
        account=account,
        private_key=target.signing_key.read_bytes(),
        kid=kid,
        public_pem=public_pem,
        service_secret=target.service_jwt_secret,
    )


# Each door: does it let this user token in?


def http_route(target, gateway: httpx.Client, token: str) -> bool:
    status = gateway.get("/api/users/me", headers={"Authorization": f"Bearer {token}"}).status_code
    assert status in (200, 401), status
    return status == 200


def sse_stream(target, gateway: httpx.Client, token: str) -> bool:
    try:
        with EventStream(gateway, headers={"Authorization": f"Bearer {token}"}, read_timeout=5) as stream:
            status = stream.response.status_code
    except StreamEnded:
        return False
    assert status in (200, 401), status
    return status == 200


def websocket(target, gateway: httpx.Client, token: str) -> bool:
    holder = Account(id="", email="", password="", token=token)
    with Chat(target.gateway_url, account=holder, timeout=10) as chat:
        try:
            return chat.receive()["type"] == "welcome"
        except Exception:
            assert chat.connection.close_code == 1008, chat.connection.close_code
            return False


def tcp_feed(target, gateway: httpx.Client, token: str) -> bool:
    terminal = Terminal(target.ports.port("notification-service", 9000))
    try:
        assert terminal.receive()["type"] == "welcome"
        terminal.send({"type": "auth", "token": token})
        answer = terminal.receive()
    finally:
        terminal.close()
    assert answer["type"] in ("authenticated", "error"), answer
    return answer["type"] == "authenticated"


def udp_feed(target, gateway: httpx.Client, token: str) -> bool:
    device = Device(target.ports.port("notification-service", 9001))
    try:
        device.send({"type": "ping", "id": 7, "token": token})
        answer = device.receive()
    finally:
        device.close()
    assert answer["type"] in ("ack", "error"), answer
    return answer["type"] == "ack"


USER_DOORS = {
    "http": http_route,
    "sse": sse_stream,
    "websocket": websocket,
    "tcp-feed": tcp_feed,
    "udp-feed": udp_feed,
}


@pytest.mark.parametrize("door", sorted(USER_DOORS))
def test_a_good_user_token_opens_every_door(door, target, gateway, keys):
    assert USER_DOORS[door](target, gateway, keys.account.token)


@pytest.mark.parametrize("door", sorted(USER_DOORS))
@pytest.mark.parametrize("forgery", sorted(USER_FORGERIES))
def test_a_bad_user_token_opens_no_door(door, forgery, target, gateway, keys):
    assert not USER_DOORS[door](target, gateway, USER_FORGERIES[forgery](keys))


# Each internal door: does it let this service token in? (audience, call)


def _internal_http(service: str, port: int, path: str) -> Callable[[Any, Keys, str], bool]:
    def door(target, keys: Keys, token: str) -> bool:
        headers = {"Authorization": f"Bearer {token}", "X-Actor-Id": keys.account.id, "X-Actor-Roles": "user"}
        url = f"{target.ports.url(service, port)}{path.format(user=keys.account.id)}"
        status = httpx.get(url, headers=headers).status_code
        assert status < 500, status
        return status != 401  # past the door: any answer but "who are you?"

    return door


def _bearer(token: str) -> tuple[tuple[str, str | bytes], ...]:
    return (("authorization", f"Bearer {token}"),)


def _past_grpc_auth(call: Callable[[], object]) -> bool:
    try:
        call()
    except grpc.RpcError as e:
        code = e.code()
    else:
        return True
    assert code == grpc.StatusCode.UNAUTHENTICATED, code
    return False


def _user_grpc(target, keys: Keys, token: str) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{target.ports.port('user-service', 50051)}") as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        request = user_pb2.GetUserRequest(id=keys.account.id)
        return _past_grpc_auth(lambda: stub.GetUser(request, metadata=_bearer(token), timeout=5))


def _event_store_grpc(target, keys: Keys, token: str) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{target.ports.port('event-store', 50054)}") as channel:
        stub = eventstore_pb2_grpc.EventStoreStub(channel)
        request = eventstore_pb2.ReadStreamRequest(stream_id=f"order-{uuid.uuid4()}", from_version=1, limit=1)
        return _past_grpc_auth(lambda: stub.ReadStream(request, metadata=_bearer(token), timeout=5))


SERVICE_DOORS: dict[str, tuple[str, Callable[[Any, Keys, str], bool]]] = {
    "user-service-http": ("user-service", _internal_http("user-service", 8001, "/internal/users/{user}")),
    "order-service-http": ("order-service", _internal_http("order-service", 8002, "/internal/orders")),
    "notification-service-http": (
        "notification-service",
        _internal_http("notification-service", 8003, "/internal/notifications"),
    ),
    "event-store-http": ("event-store", _internal_http("event-store", 8004, "/streams/order-unknown/events")),
    "user-service-grpc": ("user-service", _user_grpc),
    "event-store-grpc": ("event-store", _event_store_grpc),
}


@pytest.mark.parametrize("door", sorted(SERVICE_DOORS))
def test_a_good_service_token_opens_every_internal_door(door, target, keys):
    audience, enters = SERVICE_DOORS[door]
    token = ServiceTokenIssuer(service="gateway", secret=keys.service_secret, ttl_seconds=60).token_for(
        audience=audience
    )
    assert enters(target, keys, token)


@pytest.mark.parametrize("door", sorted(SERVICE_DOORS))
@pytest.mark.parametrize("forgery", sorted(SERVICE_FORGERIES))
def test_a_bad_service_token_opens_no_internal_door(door, forgery, target, keys):
    audience, enters = SERVICE_DOORS[door]
    assert not enters(target, keys, SERVICE_FORGERIES[forgery](keys, audience))
