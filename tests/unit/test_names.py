"""procella.stacks.models: the naming rules of the Pulumi CLI, at their boundaries."""

from __future__ import annotations

import pytest

from procella.errors import BadRequest, InvalidName
from procella.stacks.models import (
    StackRef,
    check_org_name,
    check_project_name,
    check_ref,
    check_stack_name,
    check_tags,
)

VALID_STACK_OR_PROJECT = [
    "a",
    "A",
    "0",
    "-",
    "_",
    "...",
    ".a",
    "a..",
    "dev",
    "my-stack_1.2",
    "x" * 100,
    "a-B_c.D",
]
INVALID_STACK_OR_PROJECT = [
    "",
    ".",  # URL path segments that clients resolve away
    "..",
    "x" * 101,
    "has space",
    "a/b",
    "a:b",
    "a*b",
    "a+b",
    "caf\u00e9",
    "a\tb",
    "dev\n",  # a trailing newline must not slip past "$"
    "\ndev",
    "dev\r",
    "d\x00",
]


@pytest.mark.parametrize("name", VALID_STACK_OR_PROJECT)
def test_valid_stack_and_project_names(name: str) -> None:
    assert check_stack_name(name) == name
    assert check_project_name(name) == name


@pytest.mark.parametrize("name", INVALID_STACK_OR_PROJECT)
def test_invalid_stack_and_project_names(name: str) -> None:
    with pytest.raises(InvalidName):
        check_stack_name(name)
    with pytest.raises(InvalidName):
        check_project_name(name)


@pytest.mark.parametrize("name", ["abc", "a-c", "a_c", "A9z", "o" * 40, "0rg", "a--b"])
def test_valid_org_names(name: str) -> None:
    assert check_org_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a", "ab", "o" * 41, "-abc", "abc-", "_abc", "abc_", "a.c", "a c", "caf\u00e9", "acme\n"],
)
def test_invalid_org_names(name: str) -> None:
    with pytest.raises(InvalidName):
        check_org_name(name)


def test_check_ref() -> None:
    ref = StackRef("acme", "proj", "dev")
    assert check_ref(ref) is ref
    assert str(ref) == "acme/proj/dev"
    for bad in (
        StackRef("a", "proj", "dev"),
        StackRef("acme", "", "dev"),
        StackRef("acme", "p", ""),
    ):
        with pytest.raises(InvalidName):
            check_ref(bad)


def test_invalid_name_is_a_bad_request() -> None:
    assert issubclass(InvalidName, BadRequest)


def test_valid_tags() -> None:
    tags = {"a": "", "pulumi:project": "p", "vcs.kind": "x" * 256, "A-_.:9": "v", "t" * 40: "v"}
    assert check_tags(tags) == tags
    assert check_tags({}) == {}


@pytest.mark.parametrize(
    "tags",
    [
        None,
        [],
        "a=b",
        {"": "v"},
        {"t" * 41: "v"},
        {"bad tag": "v"},
        {"a/b": "v"},
        {"a\n": "v"},
        {"ok": "v" * 257},
        {"ok": 1},
        {"ok": None},
        {"ok": ["v"]},
    ],
)
def test_invalid_tags(tags: object) -> None:
    with pytest.raises(InvalidName):
        check_tags(tags)
