"""Fixtures of the console's page tests: a browser-like client (cookies, CSRF tokens read
from the forms) and an org with stacks, updates, events and secrets made through the API."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from quart.typing import TestAppProtocol, TestClientProtocol

from procella.auth.models import Role
from tests.helpers import Api, assert_ok, make_token, step_event, summary_event

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ORG = "acme"
STACK = "acme/web/dev"
STACK_URN = "urn:pulumi:dev::web::pulumi:pulumi:Stack::web-dev"
PROVIDER_URN = "urn:pulumi:dev::web::pulumi:providers:pulumi-python::default"
BUCKET_URN = "urn:pulumi:dev::web::pulumi:pulumi:Stack$pulumi-python:dynamic:Resource::bucket"
SECRET = '"hunter2"'


@dataclass
class Page:
    status: int
    text: str
    headers: Any


class Browser:
    """The console as a browser sees it: one cookie jar, forms posted with their CSRF token."""

    def __init__(self, client: TestClientProtocol) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str, **kw: Any) -> Page:
        response = await self.client.get(path, **kw)
        text = await response.get_data(as_text=True)
        found = _CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return Page(response.status_code, text, response.headers)

    async def post(self, path: str, form: dict[str, str], *, csrf: bool = True) -> Page:
        data = {"csrf": self.csrf, **form} if csrf else form
        response = await self.client.post(path, form=data)
        text = await response.get_data(as_text=True)
        found = _CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return Page(response.status_code, text, response.headers)

    async def login(self, token: str) -> Page:
        await self.get("/login")
        return await self.post("/login", {"token": token, "next": "/"})


@pytest.fixture
def api(client: TestClientProtocol) -> Api:
    """The protocol client, as the site administrator."""
    return Api(client)


@pytest.fixture
def browser(app: TestAppProtocol) -> Browser:
    return Browser(app.test_client())


@pytest.fixture
def as_user(app: TestAppProtocol) -> Any:
    """``await as_user(Role.X, login, org=ORG)``: a fresh browser logged in with that role."""

    async def make(role: Role, login: str, org: str = ORG) -> Browser:
        browser = Browser(app.test_client())
        page = await browser.login(await make_token(app, org, role, login))
        assert page.status == 302, page.text
        return browser

    return make


def _resource(urn: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"urn": urn, "type": type_, "custom": True, **extra}


def state(secret_ciphertext: str, *, bucket_size: int) -> dict[str, Any]:
    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}
    return {
        "version": 3,
        "deployment": {
            "manifest": {"time": "2026-01-01T00:00:00Z", "magic": "", "version": "v3.276.0"},
            "secrets_providers": {
                "type": "service",
                "state": {"url": "http://x", "owner": "acme", "project": "web", "stack": "dev"},
            },
            "resources": [
                {
                    "urn": STACK_URN,
                    "type": "pulumi:pulumi:Stack",
                    "custom": False,
                    "outputs": {
                        "url": "http://bucket.example",
                        "password": {**secret, "ciphertext": secret_ciphertext},
                    },
                },
                _resource(PROVIDER_URN, "pulumi:providers:pulumi-python", id="prov-1"),
                _resource(
                    BUCKET_URN,
                    "pulumi-python:dynamic:Resource",
                    id="b-1",
                    parent=STACK_URN,
                    provider=f"{PROVIDER_URN}::prov-1",
                    protect=True,
                    inputs={"size": bucket_size, "token": secret},
                    outputs={"size": bucket_size, "token": secret},
                ),
            ],
        },
    }


def _diagnostic(sequence: int, severity: str, message: str, urn: str) -> dict[str, Any]:
    body = {"urn": urn, "prefix": "", "message": message, "color": "never", "severity": severity}
    return {"sequence": sequence, "timestamp": 1_700_000_000, "diagnosticEvent": body}


@dataclass(frozen=True)
class Seeded:
    preview_id: str
    failed_version: int


@pytest.fixture
async def seeded(api: Api) -> Seeded:
    """acme/web/dev: update 1 (creates the stack and a protected bucket under a provider,
    a secret output), update 2 (fails on the bucket), and a preview; acme/api/prod, tagged
    and never updated; other/x/y in another org."""
    await api.new_stack(STACK, tags={"env": "dev", "team": "web"})
    await api.new_stack("acme/api/prod", tags={"env": "prod"})
    await api.new_stack("other/x/y")
    ciphertext = await api.encrypt_one(STACK, SECRET.encode())
    stack_meta = {"type": "pulumi:pulumi:Stack", "urn": STACK_URN, "outputs": {"url": "u"}}
    bucket_meta = {"type": "pulumi-python:dynamic:Resource", "urn": BUCKET_URN}
    first = await api.started(STACK, message="first deploy")
    events = [
        step_event(1, "resourcePreEvent", "create", None, stack_meta),
        step_event(2, "resourcePreEvent", "create", None, bucket_meta),
        step_event(3, "resOutputsEvent", "create", None, bucket_meta),
        _diagnostic(4, "warning", "bucket is <{%fg 3%}>public<{%reset%}>\n", BUCKET_URN),
        step_event(5, "resOutputsEvent", "create", None, stack_meta),
        summary_event(6, {"create": 3}),
    ]
    await assert_ok(await api.events(first, events), 204)
    await assert_ok(await api.checkpoint(first, state(ciphertext, bucket_size=1)), 204)
    await assert_ok(await api.complete(first), 204)
    second = await api.started(STACK, message="grow the bucket")
    events = [
        step_event(1, "resourcePreEvent", "update", bucket_meta, bucket_meta),
        step_event(2, "resOpFailedEvent", "update", bucket_meta, bucket_meta),
        _diagnostic(3, "error", "quota exceeded", BUCKET_URN),
        summary_event(4, {"same": 2, "update": 0}),
    ]
    await assert_ok(await api.events(second, events), 204)
    await assert_ok(await api.checkpoint(second, state(ciphertext, bucket_size=2)), 204)
    await assert_ok(await api.complete(second, "failed"), 204)
    preview = await api.started(STACK, "preview")
    preview_events = [step_event(1, "resOutputsEvent", "update", bucket_meta, bucket_meta)]
    await assert_ok(await api.events(preview, preview_events), 204)
    await assert_ok(await api.complete(preview), 204)
    return Seeded(preview.id, 2)
