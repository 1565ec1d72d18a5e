"""OIDC bearer tokens from the hospital's identity provider, checked against its JWKS.

The token must be signed by a key the provider publishes (RS256/ES256/PS256; never ``none``
or an HMAC algorithm, which would let a holder of the public key forge tokens), be for this
bridge's audience, come from the configured issuer and be within its validity. Its ``sub``
names a user of the directory (``users.oidc_subject``): the directory, not the token, says
what that user may do, and disabling the user ends their access at once.
"""

from __future__ import annotations

from typing import Final

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.services.auth.principal import Principal, user_principal
from bridge.store.people_models import User

ALGORITHMS: Final = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class OidcVerifier:
    """Validates bearer JWTs; the JWKS is fetched on first use and when a new ``kid`` shows."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600, timeout=10)

    def subject(self, token: str) -> str | None:
        """The token's ``sub`` when it is valid, else None."""
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=self.audience,
                                issuer=self.issuer, options={"require": ["exp", "sub"]},
                                leeway=30)
        except (jwt.PyJWTError, ValueError):
            return None
        subject = claims.get("sub")
        return subject if isinstance(subject, str) and subject else None

    def authenticate(self, session: Session, token: str) -> Principal | None:
        subject = self.subject(token)
        if subject is None:
            return None
        user = session.execute(
            select(User).where(User.oidc_subject == subject)).scalar_one_or_none()
        if user is None or user.disabled:
            return None
        return user_principal(user.id, user.username, user.role, user.organization_id)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")
