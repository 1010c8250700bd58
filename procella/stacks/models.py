"""Pure rules about stacks: the names the Pulumi CLI accepts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from procella.errors import InvalidName

# fullmatch, not match with "$": "$" also matches before a final newline.
# The CLI's own rules (pulumi/sdk: tokens.ParseStackName, ValidateProjectName, stackOwnerRegexp,
# ValidateStackTags), so that anything the CLI can produce is accepted and nothing else is.
_STACK_OR_PROJECT = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_ORG = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-_]{1,38}[a-zA-Z0-9]$")
_TAG_NAME = re.compile(r"^[a-zA-Z0-9-_.:]{1,40}$")
_DOT_SEGMENTS = (".", "..")
MAX_TAG_VALUE = 256


@dataclass(frozen=True)
class StackRef:
    """The ``org/project/stack`` triple every stack route carries."""

    org: str
    project: str
    stack: str

    def __str__(self) -> str:
        return f"{self.org}/{self.project}/{self.stack}"


def check_stack_name(name: str) -> str:
    return _check_segment("stack", name)


def check_project_name(name: str) -> str:
    return _check_segment("project", name)


def _check_segment(what: str, name: str) -> str:
    if not _STACK_OR_PROJECT.fullmatch(name):
        raise InvalidName(
            f"invalid {what} name {name!r}: use 1-100 letters, digits, '-', '_' or '.'"
        )
    # As Pulumi Cloud: clients resolve these away as URL path segments, so no URL could
    # name the stack.
    if name in _DOT_SEGMENTS:
        raise InvalidName(f"invalid {what} name {name!r}: '.' and '..' are not names")
    return name


def check_org_name(name: str) -> str:
    if not _ORG.fullmatch(name):
        raise InvalidName(
            f"invalid organization name {name!r}: use 3-40 letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return name


def check_ref(ref: StackRef) -> StackRef:
    check_org_name(ref.org)
    check_project_name(ref.project)
    check_stack_name(ref.stack)
    return ref


def check_tags(tags: object) -> dict[str, str]:
    """A tag map as the CLI sends it: string names and values within the CLI's limits."""
    if not isinstance(tags, dict):
        raise InvalidName("tags must be a JSON object of strings")
    for name, value in tags.items():
        check_tag_name(name)
        if not isinstance(value, str):
            raise InvalidName(f"tag {name!r} must have a string value")
        check_tag_value(value)
    return dict(tags)


def check_tag_name(name: str) -> str:
    if not _TAG_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid tag name {name!r}: use 1-40 letters, digits, '-', '_', '.' or ':'"
        )
    return name


def check_tag_value(value: str) -> str:
    if len(value) > MAX_TAG_VALUE:
        raise InvalidName(f"a tag value is longer than {MAX_TAG_VALUE} characters")
    if not is_storable_text(value):
        raise InvalidName("a tag value holds a NUL character or a lone surrogate")
    return value


def is_storable_text(text: str) -> bool:
    """False for text no database column can hold as it is: NUL characters (PostgreSQL
    text refuses them) or lone surrogates (JSON allows "\\ud800"; UTF-8 does not)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
