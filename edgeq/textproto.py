"""Protobuf text format (``pipeline.config``, label maps) parsed without ``.proto`` files.

Messages become dicts whose values are lists (every field may repeat); scalars become int /
float / bool / str (enum names such as ``RELU_6`` stay strings).
"""

from __future__ import annotations

import re
from typing import Any

from edgeq.errors import BadInputError

Message = dict[str, list[Any]]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[{}<>:,;\[\]])
      | (?P<word>[^\s{}<>:,;\[\]"'#]+)
    )""",
    re.VERBOSE,
)
_CLOSE = {"{": "}", "<": ">"}


def parse_text_proto(text: str, source: str = "<text>") -> Message:
    """Parse protobuf text format into nested dicts of lists.

    Raises:
        BadInputError: the text is not valid protobuf text format.
    """
    tokens = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None or not match.lastgroup:
            line = text.count("\n", 0, pos) + 1
            raise BadInputError(f"{source}:{line}: unreadable text {text[pos:pos + 30]!r}")
        if match.lastgroup != "comment":
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return _parse_message(tokens, 0, None, source)[0]


def _parse_message(tokens: list[tuple[str, str]], pos: int, close: str | None,
                   source: str) -> tuple[Message, int]:
    message: Message = {}
    while pos < len(tokens):
        kind, value = tokens[pos]
        if kind == "punct" and value == close:
            return message, pos + 1
        if kind == "punct" and value in ",;":
            pos += 1
            continue
        if kind != "word":
            raise BadInputError(f"{source}: expected a field name, found {value!r}")
        name, pos = value, pos + 1
        if pos < len(tokens) and tokens[pos] == ("punct", ":"):
            pos += 1
        if pos >= len(tokens):
            raise BadInputError(f"{source}: field {name!r} has no value")
        kind, value = tokens[pos]
        if kind == "punct" and value in _CLOSE:
            child, pos = _parse_message(tokens, pos + 1, _CLOSE[value], source)
            message.setdefault(name, []).append(child)
        elif kind == "punct" and value == "[":
            pos += 1
            while tokens[pos] != ("punct", "]"):
                if tokens[pos] != ("punct", ","):
                    message.setdefault(name, []).append(_scalar(*tokens[pos]))
                pos += 1
            pos += 1
        elif kind in ("word", "string"):
            message.setdefault(name, []).append(_scalar(kind, value))
            pos += 1
        else:
            raise BadInputError(f"{source}: field {name!r} has no value (found {value!r})")
    if close is not None:
        raise BadInputError(f"{source}: missing {close!r} at the end of the file")
    return message, pos


def _scalar(kind: str, value: str) -> Any:
    if kind == "string":
        return value[1:-1].encode().decode("unicode_escape")
    if value in ("true", "True"):
        return True
    if value in ("false", "False"):
        return False
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
