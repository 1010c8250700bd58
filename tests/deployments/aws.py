"""Offline checks of AWS request bodies against botocore's own service models.

ParamValidator catches missing required members, unknown keys and wrong types, but not enum
values (an `networkMode` of "bridged" passes it), so enums are walked here separately.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from botocore.model import Shape
from botocore.session import Session, get_session
from botocore.validate import ParamValidator

# Which API call takes each file of deployments/ecs/ as its input (`--cli-input-json`).
INPUTS = {
    "task-definition.json": ("ecs", "RegisterTaskDefinition"),
    "service.json": ("ecs", "CreateService"),
    "target-group.json": ("elbv2", "CreateTargetGroup"),
    "target-group-attributes.json": ("elbv2", "ModifyTargetGroupAttributes"),
    "load-balancer-attributes.json": ("elbv2", "ModifyLoadBalancerAttributes"),
}


@functools.cache
def _session() -> Session:
    return get_session()


def input_shape(service: str, operation: str) -> Shape:
    model = _session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    assert shape is not None, f"{service}.{operation} takes no input"
    return shape


def problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """Everything wrong with ``params`` as the input of ``service.operation``; empty if valid."""
    shape = input_shape(service, operation)
    found = []
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        found.append(report.generate_report())
    found.extend(_enum_errors(shape, params, operation))
    return found


def _enum_errors(shape: Shape, value: Any, path: str) -> Iterator[str]:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        members = shape.members
        for name, item in value.items():
            if name in members:
                yield from _enum_errors(members[name], item, f"{path}.{name}")
    elif kind == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _enum_errors(shape.member, item, f"{path}[{index}]")
    elif kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            yield from _enum_errors(shape.key, key, f"{path} key")
            yield from _enum_errors(shape.value, item, f"{path}[{key!r}]")
    elif kind == "string" and shape.enum and value not in shape.enum:
        yield f"{path}: {value!r} is not one of {', '.join(sorted(shape.enum))}"
