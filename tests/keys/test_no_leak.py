"""No secret anywhere: keys with known secrets go through every lifecycle step, then every page, API
response, proxy answer, log line, the debug bundle and the whole database are searched for them."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import call_command, get_commands, load_command_class
from django.db import connection
from django.http import HttpResponse
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse
from django.urls.resolvers import RoutePattern

from together_dash.keys.models import ApiToken, AppKey, TogetherKey
from together_dash.proxy.app import Proxy
from together_dash.traffic.models import RequestLog

from .conftest import Together, new_secret

WINDOW = 12  # any 12 consecutive characters of a secret count as a leak
CHAT = {"model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Secrets:
    """The secrets a test made, and the 12-character windows that would betray each of them."""

    windows: dict[str, str] = field(default_factory=dict)  # window -> label
    values: dict[str, str] = field(default_factory=dict)  # label -> whole secret

    def add(self, label: str, whole: str) -> str:
        self.values[label] = whole
        # An issued key's "tdk_<prefix>_" part is public by design: only windows of its random part count.
        hidden = whole.split("_", 2)[2] if whole.startswith(("tdk_", "tdo_")) else whole
        for start in range(len(hidden) - WINDOW + 1):
            self.windows[hidden[start : start + WINDOW]] = label
        return whole

    def leaks(self, text: str, allowed: frozenset[str] = frozenset()) -> set[str]:
        found = {label for label, whole in self.values.items() if whole in text}
        for start in range(len(text) - WINDOW + 1):
            label = self.windows.get(text[start : start + WINDOW])
            if label is not None:
                found.add(label)
        return found - allowed


@dataclass
class Evidence:
    """Everything the test looked at, by where it came from."""

    secrets: Secrets
    places: list[tuple[str, str, frozenset[str]]] = field(default_factory=list)

    def add(self, where: str, text: str, allowed: frozenset[str] = frozenset()) -> None:
        self.places.append((where, text, allowed))

    def add_response(self, where: str, response: HttpResponse, allowed: frozenset[str] = frozenset()) -> None:
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = "\n".join(f"{name}: {value}" for name, value in response.items())
        self.add(where, f"{headers}\n{response.cookies.output()}\n{_text(body)}", allowed)

    def assert_clean(self) -> None:
        leaks = [
            (where, sorted(found))
            for where, text, allowed in self.places
            if (found := self.secrets.leaks(text, allowed))
        ]
        assert not leaks, f"secrets found in: {leaks[:20]}"


def _text(value: object) -> str:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


# ---- what to crawl --------------------------------------------------------------------------------------


def static_paths(patterns: list | None = None, prefix: str = "/") -> list[str]:
    """Every path in the URLconf that needs no argument."""
    found = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        part = _literal(entry.pattern)
        if part is None:
            continue
        if isinstance(entry, URLResolver):
            found += static_paths(entry.url_patterns, prefix + part)
        else:
            found.append(prefix + part)
    return found


def _literal(pattern: object) -> str | None:
    if isinstance(pattern, RoutePattern):
        return None if pattern.converters else str(pattern)
    regex = pattern.regex.pattern.lstrip("^").rstrip("$").replace("\\Z", "")
    return None if re.search(r"[()\[\]*+?\\|{}.]", regex) else regex


def object_paths() -> list[str]:
    """The key pages of every key, and the admin pages of every registered model's rows."""
    paths = [reverse("keys-upstream-detail", args=[key.pk]) for key in TogetherKey.objects.all()]
    paths += [reverse("keys-app-detail", args=[key.pk]) for key in AppKey.objects.all()]
    paths += [reverse("keys-upstream-revoke-confirm", args=[key.pk]) for key in TogetherKey.objects.all()]
    paths += [reverse("keys-app-revoke-confirm", args=[key.pk]) for key in AppKey.objects.all()]
    labels = {model._meta.app_label for model in admin.site._registry}
    paths += [reverse("admin:app_list", kwargs={"app_label": label}) for label in labels]
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        for pk in model._default_manager.values_list("pk", flat=True)[:25]:
            paths.append(reverse("admin:{}_{}_change".format(*info), args=[pk]))
            paths.append(reverse("admin:{}_{}_history".format(*info), args=[pk]))
    return paths


def crawl(client: Client, who: str, evidence: Evidence, under: str = "/") -> int:
    paths = [path for path in dict.fromkeys(static_paths() + object_paths()) if path.startswith(under)]
    for path in paths:
        evidence.add_response(f"{who} GET {path}", client.get(path))
    return len(paths)


def database_text() -> str:
    """dumpdata of everything plus a raw SELECT of every table (sessions, logs, audit rows included)."""
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    lines = [dump.getvalue()]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - table names come from introspection
            lines += [" | ".join(_text(value) for value in row) for row in cursor.fetchall()]
    return "\n".join(lines)


def debug_bundle_text(tmp_path: Path) -> str | None:
    """Every file of the debug bundle as text, or None while `manage.py debug_bundle` does not exist."""
    commands = get_commands()
    if "debug_bundle" not in commands:
        return None
    parser = load_command_class(commands["debug_bundle"], "debug_bundle").create_parser(
        "manage.py", "debug_bundle"
    )
    dests = {action.dest: action.option_strings for action in parser._actions}
    target, stdout = tmp_path / "bundle", io.StringIO()
    option = next((dests[name][0] for name in ("output", "out", "path", "file") if dests.get(name)), None)
    call_command("debug_bundle", *([option, str(target)] if option else []), stdout=stdout, stderr=stdout)
    texts = [stdout.getvalue()]
    for path in [target, *tmp_path.glob("**/*")] if option else tmp_path.glob("**/*"):
        if path.is_file():
            texts.append(_archive_text(path))
    return "\n".join(texts)


def _archive_text(path: Path) -> str:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return "\n".join(_text(archive.read(name)) for name in archive.namelist())
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            members = [archive.extractfile(member) for member in archive.getmembers() if member.isfile()]
            return "\n".join(_text(member.read()) for member in members if member)
    return _text(path.read_bytes())


# ---- the lifecycle the test puts the keys through -------------------------------------------------------


def _post(
    client: Client, url: str, data: dict, evidence: Evidence, allowed: frozenset[str] = frozenset()
) -> str:
    response = client.post(url, data)
    evidence.add_response(f"POST {url}", response, allowed)
    return response.content.decode()


def _shown_once(page: str) -> str:
    return re.search(r'class="once" type="text" readonly value="([^"]+)"', page)[1]


def run_lifecycle(web: Client, together: Together, secrets: Secrets, evidence: Evidence) -> dict[str, str]:
    """Add, fail, rotate, revoke and issue keys the ways an admin would; returns the app keys made."""
    first = secrets.add("upstream first", together.accepted_secret())
    second = secrets.add("upstream second", together.accepted_secret())
    third = secrets.add("upstream third", together.accepted_secret())
    _post(web, reverse("keys-upstream-add"), {"name": "prod", "secret": first}, evidence)
    _post(
        web,
        reverse("keys-upstream-add"),
        {"name": "bad", "secret": secrets.add("rejected 1", new_secret())},
        evidence,
    )
    prod = TogetherKey.objects.get(name="prod")
    rotate = reverse("keys-upstream-rotate", args=[prod.pk])
    _post(web, rotate, {"secret": secrets.add("rejected 2", new_secret())}, evidence)
    _post(web, rotate, {"secret": second, "grace_minutes": "60"}, evidence)
    call_command("add_key", "old", stdin=io.StringIO(third), stdout=io.StringIO())
    old = TogetherKey.objects.get(name="old")
    _post(web, reverse("keys-upstream-revoke", args=[old.pk]), {"confirm": "on"}, evidence)

    page = _post(
        web,
        reverse("keys-app-create"),
        {"name": "web", "upstream": prod.pk},
        evidence,
        allowed=frozenset({"app first"}),
    )
    app_first = secrets.add("app first", _shown_once(page))
    # The page that shows a key once is allowed to hold that key (and only that one).
    evidence.places[-1] = (*evidence.places[-1][:2], frozenset({"app first"}))
    web_key = AppKey.objects.get(name="web")
    page = _post(web, reverse("keys-app-rotate", args=[web_key.pk]), {"grace_minutes": "30"}, evidence)
    app_second = secrets.add("app second", _shown_once(page))
    evidence.places[-1] = (*evidence.places[-1][:2], frozenset({"app second"}))
    out, err = io.StringIO(), io.StringIO()
    call_command("create_app_key", "batch", "--upstream", "prod", stdout=out, stderr=err)
    app_revoked = secrets.add("app revoked", out.getvalue().strip())
    evidence.add("create_app_key stderr", err.getvalue())
    call_command("revoke_app_key", app_revoked.split("_")[1], stdout=io.StringIO())
    token = ApiToken(name="script")
    api_token = secrets.add("api token", token.issue())
    token.save()
    call_command("rotate_encryption_key", stdout=io.StringIO())
    return {"current": app_second, "grace": app_first, "revoked": app_revoked, "api token": api_token}


async def _through_proxy(app_keys: dict[str, str], evidence: Evidence) -> dict[str, int]:
    proxy = Proxy()
    statuses = {}
    transport = httpx.ASGITransport(app=proxy)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        presented = {**app_keys, "unknown": f"tdk_00000000_{new_secret()}", "none": ""}
        for name, key in presented.items():
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/chat/completions", CHAT)):
                response = await client.request(method, path, json=body, headers=headers)
                statuses[f"{name} {path}"] = response.status_code
                headers_text = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
                evidence.add(f"proxy {name} {method} {path}", f"{headers_text}\n{response.text}")
        # A client that puts its app key where the model goes: stored, grouped and shown, never in clear.
        current = {"Authorization": f"Bearer {app_keys['current']}"}
        misplaced = {**CHAT, "model": app_keys["current"]}
        response = await client.post("/v1/chat/completions", json=misplaced, headers=current)
        statuses["key as model"] = response.status_code
        # The answer is Together's, to the client that sent the key: it may name the model it was given.
        evidence.add("proxy key as model", response.text, allowed=frozenset({"app second"}))
    await asyncio.to_thread(proxy.drain_logs)
    await proxy.stop()
    return statuses


def _ingest_secrets_as_fields(app_key: str, evidence: Evidence) -> int:
    """The ingest API given the app key as the model, the request id and the record id."""
    records = [{"id": app_key, "endpoint": "/v1/chat/completions", "model": app_key, "status": 404,
                "request_id": app_key, "error": {"message": f"Unable to access model {app_key}"}}]
    response = Client().post("/api/ingest", data=records, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {app_key}")
    # The answer lists each record's own id back to the client that sent it.
    evidence.add_response("ingest key as fields", response, allowed=frozenset({"app second"}))
    return response.status_code


# ---- the test -------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_no_secret_appears_in_any_page_response_log_bundle_or_table(
    together: Together, key_admin: User, viewer: User, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("django", "together_dash", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    secrets = Secrets()
    evidence = Evidence(secrets)
    superuser = User.objects.create_superuser("root", "root@example.invalid", None)
    admin_web = Client()
    admin_web.force_login(superuser)

    app_keys = run_lifecycle(admin_web, together, secrets, evidence)
    api_token = app_keys.pop("api token")
    statuses = asyncio.run(_through_proxy(app_keys, evidence))
    assert statuses["current /v1/chat/completions"] == 200 and statuses["grace /v1/models"] == 200
    assert statuses["revoked /v1/chat/completions"] == 401 and statuses["unknown /v1/models"] == 401
    assert statuses["key as model"] == 404  # forwarded, and Together does not know that model
    assert _ingest_secrets_as_fields(app_keys["current"], evidence) == 200
    assert RequestLog.objects.filter(source="ingest", model_requested="[redacted]").exists()

    pages = 0
    for who, user in (
        ("superuser", superuser),
        ("key admin", key_admin),
        ("viewer", viewer),
        ("anonymous", None),
    ):
        client = Client()
        if user is not None:
            client.force_login(user)
        pages += crawl(client, who, evidence)
    pages += crawl(Client(HTTP_AUTHORIZATION=f"Bearer {api_token}"), "api token", evidence, under="/api/")
    assert pages > 100  # the crawl really covered the site, admin and API included

    evidence.add("database", database_text())
    bundle = debug_bundle_text(tmp_path)
    if bundle is not None:
        evidence.add("debug bundle", bundle)
    for record in caplog.records:
        evidence.add(f"log {record.name}", f"{record.getMessage()} {record.exc_text or ''} {record.args!r}")
    evidence.add("log text", caplog.text)

    # The setup really happened: prod was rotated, the proxy logged its requests.
    assert TogetherKey.objects.get(name="prod").secret == secrets.values["upstream second"]
    assert RequestLog.objects.filter(status_code=200).exists()
    evidence.assert_clean()


def test_the_leak_detector_finds_a_partial_secret() -> None:
    secrets = Secrets()
    secret = secrets.add("s", new_secret())
    app_key = secrets.add("a", f"tdk_abcd1234_{new_secret()}")
    assert secrets.leaks(f"…{secret[5:17]}…") == {"s"}
    assert secrets.leaks(f"key tdk_abcd1234_… and …{secret[-4:]}") == set()
    assert secrets.leaks(app_key) == {"a"} and secrets.leaks(app_key, frozenset({"a"})) == set()
