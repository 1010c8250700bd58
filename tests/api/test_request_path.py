"""The per-request path: a plain GET of a stack costs one connection checkout and one
statement once the caller's token is known (the principal cache), and a role change or a
new token is seen at once on the replica that made it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import typing as quart_typing

from procella.auth.models import Role
from procella.auth.service import PrincipalCache
from procella.settings import Settings
from procella_testing.metrics_text import delta
from tests.api.test_observability import scrape
from tests.helpers import DEFAULT_ORG, Api, assert_error, make_token, started_app

STACK = f"{DEFAULT_ORG}/proj/dev"


async def test_a_get_of_a_stack_is_one_checkout_and_one_statement(settings: Settings) -> None:
    # The token must stay known through the scrapes: a loaded machine took over the
    # default 5 s between them, and the GET read the token again.
    patient = settings.replace(auth_cache_seconds=3600)
    async with started_app(patient) as app:  # its own GC cycle must not count
        await _one_checkout_and_one_statement(Api(app.test_client()))


async def _one_checkout_and_one_statement(api: Api) -> None:
    await api.new_stack(STACK, tags={"b": "2", "a": "1"})
    await api.stack_json(STACK)  # the token is now known
    # A scrape reads the database itself (running updates, leases): measure one alone,
    # then one with the GET before it; the difference is the GET's.
    first = await scrape(api.client)
    second = await scrape(api.client)
    body = await api.stack_json(STACK)
    third = await scrape(api.client)
    scrape_alone, with_get = delta(first, second), delta(second, third)

    def cost(name: str) -> dict[Any, float]:
        keys = {key for key in with_get if key[0] == name}
        found = {key[1]: with_get[key] - scrape_alone.get(key, 0.0) for key in keys}
        return {labels: value for labels, value in found.items() if value}

    assert cost("procella_db_query_seconds_count") == {
        frozenset({("statement", "stacks.view")}): 1.0
    }
    assert cost("procella_db_checkout_seconds_count") == {frozenset(): 1.0}
    assert body["tags"] == {"a": "1", "b": "2"} and list(body["tags"]) == ["a", "b"]


async def test_role_changes_and_new_tokens_are_seen_at_once_here(
    app: quart_typing.TestAppProtocol, api: Api, as_role: Callable[..., Any]
) -> None:
    await api.new_stack(STACK)
    viewer = await as_role(DEFAULT_ORG, Role.VIEWER, "vic")
    refused = await viewer.call("PATCH", f"/api/stacks/{STACK}/tags", {"a": "b"})
    await assert_error(refused, 403)
    await make_token(app, DEFAULT_ORG, Role.MEMBER, "vic")  # vic is a member now
    allowed = await viewer.call("PATCH", f"/api/stacks/{STACK}/tags", {"a": "b"})
    assert allowed.status_code == 204
    await assert_error(await api.as_token("pul-" + "0" * 40).get_stack(STACK), 401)


def test_the_cache_forgets_after_its_ttl_and_never_keeps_what_it_did_not_get() -> None:
    now = [100.0]
    cache = PrincipalCache(5.0, clock=lambda: now[0])
    principal = object()
    cache.put("k", principal)  # type: ignore[arg-type]
    assert cache.get("k") is principal and cache.get("other") is None
    now[0] += 4.9
    assert cache.get("k") is principal
    now[0] += 0.2
    assert cache.get("k") is None
    off = PrincipalCache(0.0)
    off.put("k", principal)  # type: ignore[arg-type]
    assert off.get("k") is None


def test_the_cache_stays_bounded() -> None:
    cache = PrincipalCache(5.0, max_entries=3)
    for key in "abcd":
        cache.put(key, object())  # type: ignore[arg-type]
    assert cache.get("d") is not None
    assert sum(cache.get(k) is not None for k in "abc") < 3
