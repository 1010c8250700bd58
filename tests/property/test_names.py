"""Stack, project and organization names, tags and update ids, for any string.

The rules are the CLI's (pulumi sdk: tokens.ParseStackName, ValidateProjectName,
stackOwnerRegexp, ValidateStackTags). The strategies write those rules out on their own
(``tests.property.strategies``): a name built by the rules is accepted as it is, a name
that breaks one is an ``InvalidName`` (a 400), and nothing else is ever raised.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procella.api.responses import check_update_id
from procella.errors import InvalidName, NotFound
from procella.stacks.models import (
    MAX_TAG_VALUE,
    StackRef,
    check_org_name,
    check_project_name,
    check_ref,
    check_stack_name,
    check_tag_name,
    check_tag_value,
    check_tags,
    is_storable_text,
)
from tests.property.strategies import (
    NAME_CHARS,
    ORG_EDGE,
    ORG_MIDDLE,
    TAG_NAME_CHARS,
    any_json,
    any_text,
    org_names,
    stack_names,
    tag_names,
    tag_values,
)

# Strings near the rules: valid names with one thing broken, and arbitrary text.
name_noise = st.one_of(
    any_text,
    st.text(NAME_CHARS + "/ \n\x00é%", max_size=110),
    stack_names.map(lambda n: n + "\n"),
    st.sampled_from(["", ".", "..", "...", "a" * 100, "a" * 101]),
)


@given(stack_names)
def test_a_name_by_the_rules_is_accepted(name: str) -> None:
    assert check_stack_name(name) == name
    assert check_project_name(name) == name


@given(name_noise)
def test_stack_and_project_names_follow_the_rules(name: str) -> None:
    valid = 1 <= len(name) <= 100 and set(name) <= set(NAME_CHARS) and name not in (".", "..")
    for check in (check_stack_name, check_project_name):
        if valid:
            assert check(name) == name
        else:
            with pytest.raises(InvalidName):
                check(name)


@given(org_names)
def test_an_org_name_by_the_rules_is_accepted(name: str) -> None:
    assert check_org_name(name) == name


@given(st.one_of(name_noise, org_names.map(lambda n: n[:-1] + "-"), st.text(ORG_MIDDLE)))
def test_org_names_follow_the_rules(name: str) -> None:
    valid = (
        3 <= len(name) <= 40
        and name[0] in ORG_EDGE
        and name[-1] in ORG_EDGE
        and set(name) <= set(ORG_MIDDLE)
    )
    if valid:
        assert check_org_name(name) == name
    else:
        with pytest.raises(InvalidName):
            check_org_name(name)


@given(org_names | name_noise, stack_names | name_noise, stack_names | name_noise)
def test_a_ref_is_valid_when_each_part_is(org: str, project: str, stack: str) -> None:
    ref = StackRef(org, project, stack)
    parts_ok = []
    for check, part in ((check_org_name, org), (check_project_name, project)):
        try:
            check(part)
            parts_ok.append(True)
        except InvalidName:
            parts_ok.append(False)
    try:
        check_stack_name(stack)
        parts_ok.append(True)
    except InvalidName:
        parts_ok.append(False)
    if all(parts_ok):
        assert check_ref(ref) is ref
        assert str(ref) == f"{org}/{project}/{stack}"
    else:
        with pytest.raises(InvalidName):
            check_ref(ref)


@given(st.dictionaries(tag_names, tag_values, max_size=5))
def test_tags_by_the_rules_are_accepted(tags: dict[str, str]) -> None:
    assert check_tags(tags) == tags


tag_noise = st.one_of(
    any_json,
    st.dictionaries(tag_names | any_text, tag_values | any_text | any_json, max_size=4),
    st.dictionaries(tag_names, st.text(min_size=MAX_TAG_VALUE, max_size=MAX_TAG_VALUE + 2)),
)


@given(tag_noise)
def test_tags_are_names_to_storable_strings_or_refused(tags: Any) -> None:
    def ok(name: object, value: object) -> bool:
        return (
            isinstance(name, str)
            and 1 <= len(name) <= 40
            and set(name) <= set(TAG_NAME_CHARS)
            and isinstance(value, str)
            and len(value) <= MAX_TAG_VALUE
            and "\x00" not in value
            and all(not 0xD800 <= ord(c) <= 0xDFFF for c in value)
        )

    if isinstance(tags, dict) and all(ok(k, v) for k, v in tags.items()):
        assert check_tags(tags) == tags
    else:
        with pytest.raises(InvalidName):
            check_tags(tags)


@given(tag_names | any_text)
def test_tag_name(name: str) -> None:
    if 1 <= len(name) <= 40 and set(name) <= set(TAG_NAME_CHARS):
        assert check_tag_name(name) == name
    else:
        with pytest.raises(InvalidName):
            check_tag_name(name)


@given(tag_values | any_text)
def test_tag_value_and_storable_text(value: str) -> None:
    storable = "\x00" not in value and all(not 0xD800 <= ord(c) <= 0xDFFF for c in value)
    assert is_storable_text(value) == storable
    if storable and len(value) <= MAX_TAG_VALUE:
        assert check_tag_value(value) == value
    else:
        with pytest.raises(InvalidName):
            check_tag_value(value)


@given(st.uuids().map(lambda u: u.hex) | any_text | st.text("0123456789abcdefABCDEF", max_size=33))
def test_update_ids_are_32_lowercase_hex_digits_or_not_found(update_id: str) -> None:
    if len(update_id) == 32 and set(update_id) <= set("0123456789abcdef"):
        assert check_update_id(update_id) == update_id
    else:
        with pytest.raises(NotFound):
            check_update_id(update_id)
