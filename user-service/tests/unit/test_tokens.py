"""RS256 access tokens verify against the published JWKS, and only with RS256."""

import uuid
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from user_service.adapters.tokens import (
    RsaAccessTokenIssuer,
    SigningKeyError,
    load_private_key,
    load_public_key,
)
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


def verify_with(jwks, token):
    jwk = next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    return jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="interchange-api")


def test_during_a_rotation_both_keys_are_published_and_only_the_new_one_signs():
    old_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def issuer(key, verify_only=()):
        return RsaAccessTokenIssuer(
            key=key, issuer="interchange", audience="interchange-api", ttl_seconds=900, verify_only=verify_only
        )

    before = issuer(old_key)
    during = issuer(new_key, verify_only=[old_key.public_key()])
    old_token, _ = before.issue(user=a_user())
    new_token, _ = during.issue(user=a_user())
    assert [k["kid"] for k in during.jwks()["keys"]] == [during.kid, before.kid]
    assert jwt.get_unverified_header(new_token)["kid"] == during.kid != before.kid
    assert verify_with(during.jwks(), old_token)["sub"]  # an old token still verifies
    assert verify_with(during.jwks(), new_token)["sub"]
    after = issuer(new_key)
    assert [k["kid"] for k in after.jwks()["keys"]] == [during.kid]


def test_a_previous_key_may_be_given_as_a_private_or_a_public_pem(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "old.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = tmp_path / "old.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert load_public_key(path=private).public_numbers() == key.public_key().public_numbers()
    assert load_public_key(path=public).public_numbers() == key.public_key().public_numbers()
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningKeyError):
        load_public_key(path=tmp_path / "bad.pem")
