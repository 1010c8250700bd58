"""Strategies shared by the property tests: JSON values and texts, near-JSON noise,
mutations of valid bodies, and names by the CLI's rules."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st

INT64 = 2**63

# Strings as a client may send them: any code point, lone surrogates included (JSON can
# spell them as "\ud800"), NUL and the characters that matter to JSON and URLs.
any_text = st.text(
    st.characters(exclude_categories=()) | st.sampled_from('\x00"\\/[]{}:,\n\u2028.%'),
    max_size=12,
)
# Strings that survive UTF-8: what a well-behaved client sends.
plain_text = st.text(max_size=12)

json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(-INT64, INT64 - 1)
    | st.integers()  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | plain_text
)


def json_values(
    scalars: st.SearchStrategy[Any] = json_scalars, keys: st.SearchStrategy[str] = plain_text
) -> st.SearchStrategy[Any]:
    """Finite JSON values (what ``json.loads`` of standard JSON can give)."""
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


any_json = json_values(json_scalars | any_text, plain_text | any_text)


def reference_depth(value: Any) -> int:
    """How deeply ``value`` nests arrays and objects, counted the obvious way."""
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


@st.composite
def json_texts(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` as some standard JSON encoder might write it (spacing, escapes)."""
    style = draw(st.sampled_from(["compact", "default", "indent", "ascii"]))
    if style == "compact":
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    elif style == "default":
        text = json.dumps(value, ensure_ascii=False)
    elif style == "indent":
        text = json.dumps(value, indent=draw(st.integers(0, 3)), ensure_ascii=False)
    else:
        text = json.dumps(value)
    pad = st.text(" \t\r\n", max_size=3)
    text = draw(pad) + text + draw(pad)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: only the escaped form is UTF-8
        return json.dumps(value).encode()


_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b" ",
    b"\n",
    b"\\",
    b'\\"',
    b"\\u",
    b"d800",
    b"\\ud800",
    b"0",
    b"-",
    b"1",
    b"12",
    b".5",
    b"e",
    b"1e400",
    b"-1e400",
    b"1e308",
    b"9" * 320,
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"true",
    b"false",
    b"null",
    b'"a"',
    b'"k":',
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"\xed\xa0\x80",  # a surrogate as UTF-8: not UTF-8
]


@st.composite
def json_noise(draw: st.DrawFn) -> bytes:
    """Bytes that are often almost JSON: valid texts cut, spliced and salted with tokens
    that every strict parser must refuse or read exactly."""
    kind = draw(st.sampled_from(["tokens", "mutated", "nested"]))
    if kind == "tokens":
        return b"".join(draw(st.lists(st.sampled_from(_TOKENS), max_size=24)))
    if kind == "nested":
        opens = draw(st.lists(st.sampled_from([b"[", b'{"a":']), min_size=250, max_size=262))
        closes = [b"]" if o == b"[" else b"}" for o in reversed(opens)]
        inner = draw(st.sampled_from([b"1", b"[]", b"{}", b'"]]]"', b"NaN"]))
        return b"".join(opens) + inner + b"".join(closes)
    text = bytearray(draw(json_value_bytes))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and at < len(text):
            del text[at : at + draw(st.integers(1, 3))]
        else:
            text[at:at] = draw(st.sampled_from(_TOKENS))
    return bytes(text)


json_value_bytes = any_json.flatmap(json_texts)
json_bytes = json_value_bytes | json_noise()


@st.composite
def mutated(draw: st.DrawFn, template: Any, values: st.SearchStrategy[Any] = any_json) -> Any:
    """``template`` (a valid body) with one to three places changed: a value replaced by
    any JSON, a member removed, or a member added. Most of the body stays valid, so the
    change reaches the checks deep inside a handler."""
    body = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(1, 3))):
        body = _mutate_once(draw, body, values)
    return body


def _mutate_once(draw: st.DrawFn, body: Any, values: st.SearchStrategy[Any]) -> Any:
    # A random path down the containers; stop anywhere.
    path: list[Any] = []
    node = body
    while isinstance(node, dict | list) and node and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if not path:
        return draw(values) if draw(st.integers(0, 9)) == 0 else body
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(values)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(plain_text | any_text)] = draw(values)
    else:
        parent.append(draw(values))
    return body


# Names, by the CLI's rules (pulumi sdk: tokens, ValidateProjectName, stackOwnerRegexp,
# ValidateStackTags): written out from those rules, not copied from the server's regexes.
NAME_CHARS = string.ascii_letters + string.digits + "-_."
ORG_EDGE = string.ascii_letters + string.digits
ORG_MIDDLE = ORG_EDGE + "-_"
TAG_NAME_CHARS = string.ascii_letters + string.digits + "-_.:"

stack_names = st.text(NAME_CHARS, min_size=1, max_size=100).filter(lambda n: n not in (".", ".."))
org_names = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(ORG_EDGE),
    st.text(ORG_MIDDLE, min_size=1, max_size=38),
    st.sampled_from(ORG_EDGE),
)
tag_names = st.text(TAG_NAME_CHARS, min_size=1, max_size=40)
tag_values = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=256
)
