"""A real OIDC issuer for the tests: its own keys, a discovery document and a JWKS served
over HTTP on 127.0.0.1 (from a thread), and ID tokens signed with PyJWT.

``rotate()`` replaces the published key with a new one (a key rotation at the issuer);
``forge()`` signs with a key that was never published, under a published key id.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Key

    @classmethod
    def new(cls, alg: str = "RS256") -> SigningKey:
        if alg == "ES256":
            private: Key = ec.generate_private_key(ec.SECP256R1())
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(secrets.token_hex(6), alg, private)

    def jwk(self) -> dict[str, Any]:
        if isinstance(self.private, rsa.RSAPrivateKey):
            public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            public = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass
class OidcIssuer:
    """The issuer at ``url``; ``keys`` are what its JWKS publishes."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.new("RS256")])
    jwks_fetches: int = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/.well-known/jwks",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        }

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        audience: str = "urn:pulumi:org:organization",
        key: SigningKey | None = None,
        lifetime: float = 300,
        **headers: Any,
    ) -> str:
        """An ID token from this issuer with ``claims`` over the usual ones."""
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": audience,
            "sub": "repo:acme/infra:ref:refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            **(claims or {}),
        }
        signer = key or self.keys[0]
        return jwt.encode(
            body, signer.private, algorithm=signer.alg, headers={"kid": signer.kid, **headers}
        )

    def forge(self, claims: dict[str, Any] | None = None, **kw: Any) -> str:
        """Signed by a key nobody published, under the published key's id."""
        impostor = SigningKey(self.keys[0].kid, self.keys[0].alg, SigningKey.new().private)
        return self.token(claims, key=impostor, **kw)

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Publish a new key instead of the current ones."""
        self.keys = [SigningKey.new(alg)]
        return self.keys[0]


def _handler(issuer: OidcIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body = issuer.discovery()
            elif self.path == "/.well-known/jwks":
                issuer.jwks_fetches += 1
                body = issuer.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_issuer() -> Iterator[OidcIssuer]:
    """An issuer listening on 127.0.0.1 (a free port) until the block ends."""
    issuer = OidcIssuer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(issuer))
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
