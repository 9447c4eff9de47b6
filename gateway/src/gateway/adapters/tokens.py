"""The gateway's access-token check: interchange_common.accesstokens, with its
refusals as the gateway's AuthenticationFailed (401)."""

from gateway.domain.errors import AuthenticationFailed
from gateway.domain.model import Principal
from interchange_common.accesstokens import AccessTokenRejected, AccessTokenVerifier


class JwksTokenVerifier(AccessTokenVerifier):
    async def verify(self, *, token: str) -> Principal:
        try:
            return await super().verify(token=token)
        except AccessTokenRejected as e:
            raise AuthenticationFailed(str(e)) from e

    async def verify_authorization(self, *, header: str | None) -> Principal:
        try:
            return await super().verify_authorization(header=header)
        except AccessTokenRejected as e:
            raise AuthenticationFailed(str(e)) from e
