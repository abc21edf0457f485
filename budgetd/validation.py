"""msgspec's complaints about a value, in words a person can act on: which field, and what it takes
(bounds as numbers, a vocabulary's values, a pattern's description). One wording for every door and
the config file."""

import re
from typing import Any

import msgspec

_FIELD = re.compile(r" - at `(\$[^`]*)`")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")


def in_words(exc: msgspec.ValidationError, root: Any = None) -> tuple[str, str]:
    """(the path of the field at fault, `$.a.b[0]`; what is wrong with it). `root`, the type that was
    decoded, lets the words list a vocabulary's values or describe a pattern."""
    text = str(exc)
    match = _FIELD.search(text)
    path = match.group(1) if match else "$"
    message = _FIELD.sub("", text)
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        path = f"{path}.{unknown.group(1)}"
    at = _type_at(root, path)
    for pattern, words in _RULES:
        if found := pattern.match(message):
            return path, words(found, at)
    return path, message


_TYPE_WORDS = {"str": "a string", "int": "a whole number", "float": "a number", "bool": "a boolean",
               "array": "a list", "object": "an object", "null": "null", "datetime": "an RFC 3339 time"}
_BOUND_WORDS = {">=": "{} or more", ">": "more than {}", "<=": "at most {}", "<": "less than {}"}
_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(r"Expected `(?:int|float)` (>=|>|<=|<) (\S+)$"),
     lambda m, t: "must be " + _BOUND_WORDS[m[1]].format(_number(m[2]))),
    (re.compile(r"Expected `str` of length (>=|<=) (\d+)$"),
     lambda m, t: "must not be empty" if m.groups() == (">=", "1") else
     f"must be {_BOUND_WORDS[m[1]].format(m[2])} characters long"),
    (re.compile(r"Expected `(?:array|object)` of length (>=|<=) (\d+)$"),
     lambda m, t: f"may hold {_BOUND_WORDS[m[1]].format(m[2])} items"),
    (re.compile(r"Expected `str` matching regex '(.*)'$"),
     lambda m, t: f"must be {_description(t) or 'text matching ' + repr(m[1])}"),
    (re.compile(r"Invalid enum value (.*)$"),
     lambda m, t: f"{m[1]} is not one of {_choices(t)}" if _choices(t) else f"{m[1]} is not a known value"),
    (re.compile(r"Expected `([^`]*)`, got `(\w+)`$"),
     lambda m, t: f"must be {_either(m[1].split(' | '))}, not {_TYPE_WORDS.get(m[2], m[2])}"),
    (re.compile(r"Invalid RFC3339 encoded datetime$|Expected `datetime` with a timezone component$"),
     lambda m, t: "must be an RFC 3339 time with an offset, such as 2026-11-28T13:00:00Z"),
    (re.compile(r"Object missing required field `([^`]*)`$"), lambda m, t: f"`{m[1]}` is required"),
    (re.compile(r"Object contains unknown field `([^`]*)`$"),
     lambda m, t: "unknown field; check its spelling (docs/PROTOCOL.md lists each op's fields)"),
]


def _either(kinds: list[str]) -> str:
    words = [_TYPE_WORDS.get(k, k) for k in kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _number(text: str) -> str:
    return text[:-2] if text.endswith(".0") else text


def _type_at(root: Any, path: str) -> Any:
    """The msgspec type info at `path` ($.a.b[0]) inside `root`, or None when it cannot be followed."""
    if root is None:
        return None
    info = msgspec.inspect.type_info(root)
    for step in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", path):
        info = _step(info, *step)
        if info is None:
            return None
    return info


def _step(info: Any, name: str, index: str) -> Any:
    info = info.type if isinstance(info, msgspec.inspect.Metadata) else info
    if isinstance(info, msgspec.inspect.UnionType):
        return next((found for t in info.types if (found := _step(t, name, index)) is not None), None)
    if name and isinstance(info, msgspec.inspect.StructType):
        return next((f.type for f in info.fields if f.encode_name == name), None)
    if name and isinstance(info, msgspec.inspect.TypedDictType):
        return next((f.type for f in info.fields if f.encode_name == name), None)
    if index and isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.SetType,
                                   msgspec.inspect.FrozenSetType, msgspec.inspect.VarTupleType)):
        return info.item_type
    if isinstance(info, msgspec.inspect.DictType):
        return info.value_type
    return None


def _leaf(info: Any) -> list[Any]:
    info = info.type if isinstance(info, msgspec.inspect.Metadata) else info
    if isinstance(info, msgspec.inspect.UnionType):
        return [leaf for t in info.types for leaf in _leaf(t)]
    return [info]


def _choices(info: Any) -> str:
    values = [str(v) for leaf in _leaf(info) if isinstance(leaf, msgspec.inspect.LiteralType) for v in leaf.values]
    return ", ".join(values)


def _description(info: Any) -> str | None:
    if isinstance(info, msgspec.inspect.UnionType):
        return next((found for t in info.types if (found := _description(t))), None)
    if isinstance(info, msgspec.inspect.Metadata) and info.extra_json_schema:
        return info.extra_json_schema.get("description")
    return None
