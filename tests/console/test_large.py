"""Pages stay small on a 5000-resource stack: the resource list is paginated, and an update
of 10,000 engine events renders at most a page of them. Prints each page's server time
(run with ``-s``); the timings are reported, not asserted (a loaded CI machine's timings
are no property of the code)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from procella.console.pages import CHANGES_PER_PAGE, RESOURCES_PER_PAGE
from procella.console.updates import EVENTS_PER_PAGE
from tests.conftest import ADMIN_TOKEN
from tests.console.conftest import Browser
from tests.helpers import Api, assert_ok, untyped

# A 5,000-resource stack: seconds to build.
pytestmark = pytest.mark.slow

RESOURCES = 5000
STACK = "acme/big/prod"
RESOURCE_URN = "urn:pulumi:dev::proj::pulumi-python:dynamic:Resource::r{}"


def _step_events(first: int, count: int) -> list[dict[str, Any]]:
    events = []
    for i in range(count):
        urn = RESOURCE_URN.format(i + 1)
        state = {"type": "pulumi-python:dynamic:Resource", "urn": urn, "outputs": {"value": i}}
        for offset, kind in enumerate(("resourcePreEvent", "resOutputsEvent")):
            metadata = {"op": "create", "urn": urn, "type": state["type"], "new": state}
            events.append(
                {"sequence": first + 2 * i + offset, "timestamp": 0, kind: {"metadata": metadata}}
            )
    return events


async def test_a_5000_resource_stack_pages(browser: Browser, api: Api) -> None:
    await api.new_stack(STACK)
    update = await api.started(STACK)
    events = _step_events(1, RESOURCES)
    for start in range(0, len(events), 1000):
        await assert_ok(await api.events(update, events[start : start + 1000]), 204)
    await assert_ok(await api.checkpoint(update, untyped(RESOURCES)), 204)
    await assert_ok(await api.complete(update), 204)
    await browser.login(ADMIN_TOKEN)
    pages = {
        "org": "/acme",
        "stack": f"/{STACK}",
        "stack, last page": f"/{STACK}?page=25",
        "update (10,000 events)": f"/{STACK}/updates/1",
        "resource": f"/{STACK}/resources/{RESOURCE_URN.format(4999)}",
        "diff 0 -> 1": f"/{STACK}/diff?from=0&to=1",
    }
    for name, path in pages.items():
        started = time.perf_counter()
        page = await browser.get(path)
        elapsed = time.perf_counter() - started
        assert page.status == 200, (path, page.text[:300])
        print(f"{name}: {elapsed * 1000:.0f} ms, {len(page.text) // 1024} KiB")
        if name.startswith("stack"):
            assert page.text.count("/resources/") == RESOURCES_PER_PAGE
    assert "Page 1 of 25" in (await browser.get(f"/{STACK}")).text
    diff = (await browser.get(f"/{STACK}/diff?from=0&to=1")).text
    assert diff.count("change-added") == CHANGES_PER_PAGE and "Page 1 of 25" in diff
    assert "page=2" in diff and "from=0" in diff
    update_page = (await browser.get(f"/{STACK}/updates/1")).text
    assert update_page.count('class="ev ev-create"') == EVENTS_PER_PAGE
    after = f"?after={EVENTS_PER_PAGE}"
    assert f'href="{after}">More events' in update_page
    rest = (await browser.get(f"/{STACK}/updates/1{after}")).text
    assert rest.count('class="ev ev-create"') == 2 * RESOURCES - EVENTS_PER_PAGE
