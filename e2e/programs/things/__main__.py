"""Procella e2e program: `pulumi.dynamic` resources only, so no provider plugin is downloaded.

Stack config picks what exists:

* ``scenario`` = ``basic`` (default), ``slow`` or ``bulk``.
* ``basic``: ``generation`` 1 (default) or 2. Generation 2 updates ``alpha``, replaces
  ``bravo`` (its ``replace_key`` changes, which the provider reports as a replacement) and
  deletes ``charlie``. Both generations have a component with two children, a protected
  resource and a secret stack output.
* ``slow``: ``fast``, then ``slow``, whose create adds a line to ``<wait_file>.started`` and
  then waits until ``wait_file`` exists (``wait_file`` empty: no wait). Tests use it to hold an
  update open. ``slow_count`` (default 1) more than 1 adds ``slow-1`` … ``slow-<count-1>``
  beside it, all created at once: each adds its line, so a test sees how many are in flight.
* ``bulk``: ``count`` independent resources (the benchmark); each carries ``payload_bytes``
  (default 0) of filler in its state, and ``generation`` 2 changes the first ``changed``
  (default 10) of them.
* ``plain_provider`` (bool, bulk only): serialize the dynamic provider in the clear. By
  default the SDK makes it a secret, so a CLI without journaling re-encrypts every provider
  at every checkpoint (``batch-encrypt``): slow and memory-hungry on every backend.
* ``secret`` (optional, secret config): exported as the secret output ``config_secret``.

Two traps of the SDK's ``pulumi.dynamic`` (3.259-3.276, Python < 3.14) are worked around here,
not in the server: ``serialize_provider`` wraps pickle's ``_Pickler._batch_setitems`` once more
for every resource and never restores it, so a program dies with ``RecursionError`` after
about 233 dynamic resources; ``Thing`` puts the original back after each resource. And the
provider serves its RPCs from 4 threads, so held creates would starve later Checks; the
first held create raises the limit (``_unlimit_provider_threads``).
"""

from __future__ import annotations

import pickle
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

# Inputs whose change the provider reports; `replace_key` changes force a replacement.
DIFFED_INPUTS = ("value", "replace_key")


class ThingProvider(ResourceProvider):
    """Keeps its state only in Pulumi's checkpoint. Imports live inside the methods because the
    provider is pickled by value into the state and runs in a separate provider process."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        import uuid

        wait_file = props.get("wait_file") or ""
        if wait_file:
            _wait_for(wait_file, timeout=300.0)
        return CreateResult(id_=uuid.uuid4().hex, outs=_outputs(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in DIFFED_INPUTS if olds.get(key) != news.get(key)]
        replaces = [key for key in changed if key == "replace_key"]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=_outputs(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # Refresh finds the resource exactly as recorded: nothing drifts outside Pulumi.
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class PlainThingProvider(ThingProvider):
    """The same provider, stored in the state as plain text rather than as a secret."""

    serialize_as_secret_always = False


# What serialize_provider wraps (and leaves wrapped) on every dynamic resource.
_BATCH_SETITEMS = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]


def _outputs(props: dict[str, Any]) -> dict[str, Any]:
    outs = {key: value for key, value in props.items() if not key.startswith("__")}
    outs["digest"] = f"{props.get('value', '')}/{props.get('replace_key', '')}"
    return outs


def _wait_for(path: str, timeout: float) -> None:
    """Announce that the update has reached this resource, then block until released."""
    import os
    import time

    _unlimit_provider_threads()
    with open(path + ".started", "a") as marker:
        marker.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def _unlimit_provider_threads(workers: int = 64) -> None:
    """The SDK serves a dynamic provider from a pool of 4 threads. Four creates blocked here
    would hold all of them, and the Check of every resource registered after them would wait
    behind: how many creates an update holds in flight would depend on which RPC came first.
    Raising the pool's limit (read again at each submit) lets every Check through."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    for pool in gc.get_objects():
        if isinstance(pool, ThreadPoolExecutor) and pool._max_workers < workers:
            pool._max_workers = workers


class Thing(Resource):
    value: pulumi.Output[str]
    replace_key: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        value: str,
        replace_key: str = "k1",
        wait_file: str = "",
        opts: pulumi.ResourceOptions | None = None,
        *,
        payload: str = "",
        plain: bool = False,
    ) -> None:
        props = {
            "value": value,
            "replace_key": replace_key,
            "wait_file": wait_file,
            "digest": None,
        }
        if payload:
            props["payload"] = payload
        provider = PlainThingProvider() if plain else ThingProvider()
        super().__init__(provider, name, props, opts)
        pickle._Pickler._batch_setitems = _BATCH_SETITEMS  # type: ignore[attr-defined]


class Group(pulumi.ComponentResource):
    """A component whose two children are parented to it (URNs carry the parent type)."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("e2e:index:Group", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.one = Thing(f"{name}-one", "one", opts=child)
        self.two = Thing(f"{name}-two", "two", opts=child)
        self.register_outputs({"one": self.one.value, "two": self.two.value})


def basic(config: pulumi.Config) -> None:
    generation = config.get_int("generation") or 1
    alpha = Thing("alpha", "a1" if generation == 1 else "a2")
    bravo = Thing("bravo", "b1", replace_key="k1" if generation == 1 else "k2")
    names = ["alpha", "bravo"]
    if generation == 1:
        Thing("charlie", "c1")
        names.append("charlie")
    group = Group("group")
    guarded = Thing("guarded", "g1", opts=pulumi.ResourceOptions(protect=True))
    pulumi.export("generation", generation)
    pulumi.export("names", names)
    pulumi.export("alpha_value", alpha.value)
    pulumi.export("bravo_digest", bravo.digest)
    pulumi.export("group_one", group.one.value)
    pulumi.export("guarded_id", guarded.id)
    pulumi.export("secret_out", pulumi.Output.secret("hush-hush-output-value"))


def slow(config: pulumi.Config) -> None:
    fast = Thing("fast", "f1")
    wait_file = config.get("wait_file") or ""
    after_fast = pulumi.ResourceOptions(depends_on=[fast])
    slow_thing = Thing("slow", "s1", wait_file=wait_file, opts=after_fast)
    for index in range(1, config.get_int("slow_count") or 1):
        Thing(f"slow-{index}", f"s1-{index}", wait_file=wait_file, opts=after_fast)
    pulumi.export("slow_id", slow_thing.id)


def bulk(config: pulumi.Config) -> None:
    count = config.get_int("count") or 100
    payload = "x" * (config.get_int("payload_bytes") or 0)
    generation = config.get_int("generation") or 1
    changed = config.get_int("changed")
    changed = 10 if changed is None else changed
    plain = config.get_bool("plain_provider") or False
    for index in range(count):
        value = f"v{index}" if generation == 1 or index >= changed else f"v{index}-g{generation}"
        Thing(f"item-{index}", value, payload=payload, plain=plain)
    pulumi.export("count", count)


def main() -> None:
    config = pulumi.Config()
    scenarios = {"basic": basic, "slow": slow, "bulk": bulk}
    scenario = config.get("scenario") or "basic"
    scenarios[scenario](config)
    secret = config.get_secret("secret")
    if secret is not None:
        pulumi.export("config_secret", secret)


main()
