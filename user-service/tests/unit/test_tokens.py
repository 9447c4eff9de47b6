"""RS256 access tokens verify against the published JWKS, and only with RS256."""

import uuid
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from user_service.adapters.tokens import RsaAccessTokenIssuer, SigningKeyError, load_private_key
from user_service.domain.model import User, UserStatus


@pytest.fixture(scope="module")
def issuer():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return RsaAccessTokenIssuer(key=key, issuer="interchange", audience="interchange-api", ttl_seconds=900)


def a_user():
    now = datetime.now(UTC)
    return User(uuid.uuid4(), "Ada", "ada@example.com", None, ("user",), UserStatus.ACTIVE, now, now)


def test_tokens_carry_kid_and_the_required_claims(issuer):
    user = a_user()
    token, expires_in = issuer.issue(user=user)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == issuer.kid
    jwk = next(k for k in issuer.jwks()["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="interchange-api",
        issuer="interchange",
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    assert claims["sub"] == str(user.id)
    assert claims["roles"] == ["user"]
    assert claims["exp"] - claims["iat"] == expires_in == 900


def test_the_kid_is_stable_for_the_same_key(issuer):
    assert issuer.jwks()["keys"][0]["kid"] == issuer.kid
    assert "d" not in issuer.jwks()["keys"][0]  # never the private part


def test_a_missing_or_wrong_key_file_is_a_clear_error(tmp_path):
    with pytest.raises(SigningKeyError):
        load_private_key(path=tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(SigningKeyError):
        load_private_key(path=garbage)
