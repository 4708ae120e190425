"""OpenID Connect providers on loopback for the sign-in tests.

`run_oidc_provider` starts oidc-provider (npm) in Node, a complete provider with its own login screen,
for the browser. `TokenForge` is a provider of our own that hands out whatever ID token a test signs
(expired, tampered, for another audience): the real callback must refuse each of them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from tests.services import wait_or_kill

SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
MARK = "oidc-test: "
NODE_MODULES = Path(settings.BASE_DIR) / "node_modules" / "oidc-provider"


@dataclass
class NodeProvider:
    """oidc-provider running in Node; `set_users` changes the users' groups at the provider."""

    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[str]

    log: IO[str]

    def set_users(self, users: dict[str, dict[str, Any]]) -> None:
        self.process.stdin.write(json.dumps({"users": users}) + "\n")
        self.process.stdin.flush()
        if _answer(self.process) != "ok":
            raise RuntimeError(f"oidc-provider stopped: {self.errors()}")

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]


@contextmanager
def run_oidc_provider(redirect_uri: str, users: dict[str, dict[str, Any]]) -> Iterator[NodeProvider]:
    """Start oidc-provider with one confidential client and these users; stop it afterwards."""
    if not NODE_MODULES.exists():
        raise RuntimeError("node_modules/oidc-provider is missing: run `make npm` (npm ci) first.")
    client_id, client_secret = f"dash-{secrets.token_hex(4)}", secrets.token_urlsafe(32)
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        ["node", str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        text=True, cwd=settings.BASE_DIR,
    )
    try:
        config = {"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri}
        process.stdin.write(json.dumps({**config, "users": users}) + "\n")
        process.stdin.flush()
        line = _answer(process)
        if not line:
            raise RuntimeError(f"oidc-provider exited with {process.wait()} before listening: {log.read()}")
        yield NodeProvider(json.loads(line)["issuer"], client_id, client_secret, process, log)
    finally:
        process.stdin.close()
        wait_or_kill(process)
        log.close()


def _answer(process: subprocess.Popen[str]) -> str:
    """The script's next answer, past oidc-provider's own notices; "" once it has exited."""
    while line := process.stdout.readline():
        if line.startswith(MARK):
            return line.removeprefix(MARK).strip()
    return ""


def configure(settings: Any, issuer: str, client_id: str, client_secret: str, **more: Any) -> None:
    """Point the dashboard's single sign-on at a provider (pytest-django's settings fixture)."""
    settings.OIDC_ISSUER = issuer
    settings.OIDC_CLIENT_ID = settings.OIDC_RP_CLIENT_ID = client_id
    settings.OIDC_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET = client_secret
    settings.OIDC_ENABLED = True
    settings.OIDC_PROVIDER_NAME = "Acme SSO"
    settings.OIDC_VIEWER_GROUPS = ["ops"]
    settings.OIDC_KEY_ADMIN_GROUPS = ["platform-admins"]
    settings.AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend", "together_dash.dashboard.sso.SsoBackend",
    ]
    for name, value in more.items():
        setattr(settings, name, value)


@dataclass
class TokenForge:
    """A provider whose token endpoint answers with the ID token the test made for the next code."""

    issuer: str = ""
    client_id: str = field(default_factory=lambda: f"dash-{secrets.token_hex(4)}")
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    id_token: str = ""
    userinfo: dict[str, Any] = field(default_factory=dict)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)

    def claims(self, nonce: str, /, **changes: Any) -> dict[str, Any]:
        """The claims of a good ID token for this client; `changes` spoil it (None drops a claim)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer, "aud": self.client_id, "sub": "user-1", "nonce": nonce,
            "iat": now, "exp": now + 300,
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(self, claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/auth",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/me",
            "jwks_uri": f"{self.issuer}/jwks",
        }


def _handler(forge: TokenForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answers = {
                "/.well-known/openid-configuration": forge.discovery,
                "/jwks": forge.jwks,
                "/me": lambda: forge.userinfo,
            }
            if self.path not in answers:
                return self._send(404, {"error": "not_found"})
            self._send(200, answers[self.path]())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            forge.token_requests.append(parse_qs(body))
            self._send(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                             "id_token": forge.id_token, "expires_in": 300})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def run_token_forge() -> Iterator[TokenForge]:
    forge = TokenForge()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(forge))
    forge.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield forge
    finally:
        server.shutdown()
        server.server_close()
