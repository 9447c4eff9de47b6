import time

import jwt
import pytest

from interchange_common.errors import ServiceAuthError
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier

SECRET = "s" * 40


def issuer(service="gateway", ttl=300):
    return ServiceTokenIssuer(service=service, secret=SECRET, ttl_seconds=ttl)


def verifier(service="user-service"):
    return ServiceTokenVerifier(service=service, secret=SECRET)


def test_a_token_for_the_audience_names_the_caller():
    caller = verifier().verify(token=issuer().token_for(audience="user-service"))
    assert caller.service == "gateway"


def test_the_issuer_reuses_a_fresh_token_and_renews_an_old_one():
    tokens = issuer(ttl=300)
    first = tokens.token_for(audience="user-service")
    assert tokens.token_for(audience="user-service") == first
    tokens._cache["user-service"] = (first, time.time() + 10)  # almost expired
    assert tokens.token_for(audience="user-service") != first


def test_a_token_for_another_service_is_refused():
    with pytest.raises(ServiceAuthError):
        verifier("order-service").verify(token=issuer().token_for(audience="user-service"))


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"iss": "gateway", "sub": "gateway", "aud": "user-service", "iat": 0, "exp": 1}, SECRET),
        jwt.encode({"iss": "gateway", "sub": "gateway", "aud": "user-service"}, SECRET),
        jwt.encode(
            {"iss": "gateway", "sub": "gateway", "aud": "user-service", "iat": int(time.time()), "exp": 2**40},
            "another secret of enough length 0123456789",
        ),
        jwt.encode(
            {"iss": "gateway", "sub": "gateway", "aud": "user-service", "iat": int(time.time()), "exp": 2**40},
            "",
            algorithm="none",
        ),
        jwt.encode(
            {"iss": "gateway", "sub": "user", "aud": "user-service", "iat": int(time.time()), "exp": 2**40}, SECRET
        ),
        jwt.encode(
            {"iss": "mallory", "sub": "mallory", "aud": "user-service", "iat": int(time.time()), "exp": 2**40}, SECRET
        ),
        jwt.encode(
            {"iss": "gateway", "sub": "gateway", "aud": "user-service", "iat": int(time.time()) + 3600, "exp": 2**40},
            SECRET,
        ),
        jwt.encode({"iss": "gateway", "sub": "gateway", "iat": int(time.time()), "exp": 2**40}, SECRET),
        "not-a-token",
    ],
    ids=[
        "expired",
        "no-exp-iat",
        "wrong-key",
        "alg-none",
        "sub-differs",
        "unknown-issuer",
        "iat-in-the-future",
        "no-aud",
        "garbage",
    ],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(ServiceAuthError):
        verifier().verify(token=token)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer "])
def test_a_missing_bearer_header_is_refused(header):
    with pytest.raises(ServiceAuthError, match="required"):
        verifier().verify_authorization(header=header)


def test_a_remembered_token_is_refused_once_it_expires():
    check = verifier()
    token = issuer(ttl=60).token_for(audience="user-service")
    caller = check.verify(token=token)
    check._cache[token] = type(caller)(service=caller.service, expires_at=time.time() - 1)
    # The cached entry is stale, so the token is verified again (and is still valid).
    assert check.verify(token=token).service == "gateway"
    assert check._cache[token].expires_at > time.time()
