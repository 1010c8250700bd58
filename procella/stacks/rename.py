"""Rewrite a deployment for a renamed stack: pure, no I/O.

URNs carry the stack and project names (``urn:pulumi:<stack>::<project>::<type>::<name>``),
so after a rename every URN in the state must follow, or the next ``pulumi up`` would
create everything anew and delete the "old" resources. These are the rules of the CLI's
own ``edit.RenameStack`` (pulumi pkg/resource/edit), which the file backend applies on
rename: the same fields, the root stack resource renamed to ``<project>-<stack>``, and
the service secrets provider pointed at the new name.
"""

from __future__ import annotations

import json
from typing import Any

URN_PREFIX = "urn:pulumi:"
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
# Signatures of serialized property values (pulumi sdk/go/common/resource/sig).
SIG_KEY = "4dabf18193072939515e22adb298388d"
RESOURCE_REFERENCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
OUTPUT_VALUE_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"


class Renamer:
    def __init__(self, old_project: str, old_stack: str, new_project: str, new_stack: str) -> None:
        self.old = (old_stack, old_project)
        self.new_project = new_project
        self.new_stack = new_stack

    def urn(self, urn: Any) -> Any:
        """The URN under the new names, if it belongs to the old stack; else unchanged."""
        if not isinstance(urn, str) or not urn.startswith(URN_PREFIX):
            return urn
        parts = urn[len(URN_PREFIX) :].split("::", 3)
        if len(parts) != 4 or (parts[0], parts[1]) != self.old:
            return urn
        qualified_type, name = parts[2], parts[3]
        if qualified_type == ROOT_STACK_TYPE:
            name = f"{self.new_project}-{self.new_stack}"
        return f"{URN_PREFIX}{self.new_stack}::{self.new_project}::{qualified_type}::{name}"

    def provider_reference(self, ref: Any) -> Any:
        """``<provider urn>::<id>``: the URN part renamed, the id kept."""
        if not isinstance(ref, str) or "::" not in ref:
            return ref
        urn, _, provider_id = ref.rpartition("::")
        new_urn = self.urn(urn)
        return ref if new_urn == urn else f"{new_urn}::{provider_id}"

    def resource(self, res: dict[str, Any]) -> None:
        for key in ("urn", "parent", "deletedWith", "viewOf"):
            if key in res:
                res[key] = self.urn(res[key])
        for key in ("dependencies", "replaceWith", "aliases"):
            if isinstance(res.get(key), list):
                res[key] = [self.urn(u) for u in res[key]]
        if isinstance(res.get("propertyDependencies"), dict):
            for prop, deps in res["propertyDependencies"].items():
                if isinstance(deps, list):
                    res["propertyDependencies"][prop] = [self.urn(u) for u in deps]
        if "provider" in res:
            res["provider"] = self.provider_reference(res["provider"])
        for key in ("inputs", "outputs", "replacementTrigger"):
            if key in res:
                res[key] = self.value(res[key])

    def value(self, value: Any) -> Any:
        """A serialized property value with its resource references renamed, in place.

        A loop over a work list rather than recursion: a state may nest deeper than
        Python's recursion limit (the JSON parser that accepted it allows that).
        """
        box = [value]
        work: list[tuple[Any, Any]] = [(box, 0)]
        while work:
            holder, key = work.pop()
            item = holder[key]
            if isinstance(item, list):
                work.extend((item, i) for i in range(len(item)))
            elif isinstance(item, dict):
                work.extend(self._special(item))
        return box[0]

    def _special(self, item: dict[str, Any]) -> list[tuple[Any, Any]]:
        """Rename what a signed value holds; return the members still to walk."""
        sig = item.get(SIG_KEY)
        if sig == RESOURCE_REFERENCE_SIG:
            if "urn" in item:
                item["urn"] = self.urn(item["urn"])
            return []
        if sig == SECRET_SIG:
            for key in ("plaintext", "ciphertext"):
                item[key] = self._secret_text(item.get(key))
            return []
        if sig == OUTPUT_VALUE_SIG:
            if isinstance(item.get("dependencies"), list):
                item["dependencies"] = [self.urn(u) for u in item["dependencies"]]
            return [(item, "value")] if "value" in item else []
        return [(item, k) for k in item]

    def _secret_text(self, text: Any) -> Any:
        """A secret's plaintext is JSON of a property value; ciphertext is not JSON."""
        if not isinstance(text, str) or not text:
            return text
        try:
            inner = json.loads(text)
        except ValueError:
            return text
        return json.dumps(self.value(inner), separators=(",", ":"))


def rename_deployment(
    wrapper: dict[str, Any], old: tuple[str, str, str], new: tuple[str, str, str]
) -> dict[str, Any]:
    """Rewrite an UntypedDeployment for the stack ``old`` -> ``new`` ((org, project, stack)),
    in place; returns it."""
    _, old_project, old_stack = old
    _, new_project, new_stack = new
    renamer = Renamer(old_project, old_stack, new_project, new_stack)
    deployment = wrapper.get("deployment")
    if not isinstance(deployment, dict):
        return wrapper
    for res in deployment.get("resources") or []:
        if isinstance(res, dict):
            renamer.resource(res)
    for op in deployment.get("pending_operations") or []:
        if isinstance(op, dict) and isinstance(op.get("resource"), dict):
            renamer.resource(op["resource"])
    provider = deployment.get("secrets_providers")
    if isinstance(provider, dict) and provider.get("type") == "service":
        state = provider.get("state")
        if isinstance(state, dict):
            state["project"] = new_project
            state["stack"] = new_stack
    return wrapper
