"""Renaming a stack rewrites its state the way the CLI's ``edit.RenameStack`` does."""

from __future__ import annotations

import json
from typing import Any

from procella.stacks.rename import RESOURCE_REFERENCE_SIG, SECRET_SIG, SIG_KEY, rename_deployment

OLD = ("acme", "web", "dev")
NEW = ("acme", "shop", "prod")
STACK_URN = "urn:pulumi:dev::web::pulumi:pulumi:Stack::web-dev"
PROVIDER_URN = "urn:pulumi:dev::web::pulumi:providers:aws::default"
THING_URN = "urn:pulumi:dev::web::my:mod:Thing::a::b"  # names may contain "::"
OTHER_URN = "urn:pulumi:other::web::my:mod:Thing::x"


def deployment() -> dict[str, Any]:
    thing = {
        "urn": THING_URN,
        "parent": STACK_URN,
        "provider": f"{PROVIDER_URN}::1234-abcd",
        "dependencies": [PROVIDER_URN, OTHER_URN],
        "propertyDependencies": {"p": [STACK_URN]},
        "aliases": [THING_URN],
        "inputs": {"ref": {SIG_KEY: RESOURCE_REFERENCE_SIG, "urn": STACK_URN}},
        "outputs": {
            "secret": {
                SIG_KEY: SECRET_SIG,
                "plaintext": json.dumps([{SIG_KEY: RESOURCE_REFERENCE_SIG, "urn": STACK_URN}]),
            },
            "plain": STACK_URN,  # an ordinary string is data, not a reference
        },
    }
    return {
        "version": 3,
        "deployment": {
            "secrets_providers": {
                "type": "service",
                "state": {"url": "u", "owner": "acme", "project": "web", "stack": "dev"},
            },
            "resources": [{"urn": STACK_URN}, {"urn": PROVIDER_URN}, thing],
            "pending_operations": [{"resource": {"urn": THING_URN}, "type": "creating"}],
        },
    }


def test_every_urn_field_follows_the_new_names() -> None:
    d = rename_deployment(deployment(), OLD, NEW)["deployment"]
    stack, provider, thing = d["resources"]
    assert stack["urn"] == "urn:pulumi:prod::shop::pulumi:pulumi:Stack::shop-prod"
    assert provider["urn"] == "urn:pulumi:prod::shop::pulumi:providers:aws::default"
    assert thing["urn"] == "urn:pulumi:prod::shop::my:mod:Thing::a::b"
    assert thing["parent"] == stack["urn"]
    assert thing["provider"] == provider["urn"] + "::1234-abcd"
    assert thing["dependencies"] == [provider["urn"], OTHER_URN]  # other stacks untouched
    assert thing["propertyDependencies"] == {"p": [stack["urn"]]}
    assert thing["aliases"] == [thing["urn"]]
    assert thing["inputs"]["ref"]["urn"] == stack["urn"]
    assert json.loads(thing["outputs"]["secret"]["plaintext"])[0]["urn"] == stack["urn"]
    assert thing["outputs"]["plain"] == STACK_URN
    assert d["pending_operations"][0]["resource"]["urn"] == thing["urn"]
    assert d["secrets_providers"]["state"] == {
        "url": "u",
        "owner": "acme",
        "project": "shop",
        "stack": "prod",
    }


def test_a_state_without_resources_or_service_secrets_is_fine() -> None:
    wrapper = {"version": 3, "deployment": {"manifest": {}}}
    assert rename_deployment(wrapper, OLD, NEW) == {"version": 3, "deployment": {"manifest": {}}}
