"""A fast "certainly valid" for JSON documents, so jsonschema only has to judge the rest.

``jsonschema`` walks a document in pure Python (~0.1 ms for a results
record): a session's thousands of records cost a second at write and again
at read. ``fast_check(schema)`` compiles a schema that uses only the plain
keywords below into nested closures that answer, per document, ``True``
(valid), ``False`` (invalid) or ``None`` (not sure). Callers take ``True`` as
the answer and ask jsonschema otherwise, so a wrong "not sure" costs time,
never correctness; every rule errs towards ``None`` (a float where an integer
is wanted, an enum of non-strings).

Supported: ``type``, ``enum``, ``required``, ``properties``,
``additionalProperties``, ``minLength``, ``maxLength``, ``minimum``,
``maximum``, ``items``, ``prefixItems``, ``minItems``, ``maxItems``, ``oneOf``,
``anyOf``, and the annotations (``description`` ...). A schema with any other
keyword gets no fast path (``fast_check`` returns ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Check = Callable[[Any], bool | None]

ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated"})
SUPPORTED = ANNOTATIONS | {
    "type",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "oneOf",
    "anyOf",
}


class Unsupported(Exception):
    """The schema uses a keyword (or form) this module does not decide."""


def fast_check(schema: Mapping[str, Any] | bool) -> Check | None:
    """A three-valued check for ``schema``, or ``None`` when the schema needs the full validator."""
    try:
        return _compile(schema)
    except Unsupported:
        return None


def _compile(schema: Mapping[str, Any] | bool) -> Check:
    if schema is True or schema == {}:
        return lambda _: True
    if schema is False:
        return lambda _: False
    if not isinstance(schema, Mapping) or not set(schema) <= SUPPORTED:
        raise Unsupported(schema)
    checks = [
        _type(schema["type"]) if "type" in schema else None,
        _enum(schema["enum"]) if "enum" in schema else None,
        _object(schema) if {"required", "properties", "additionalProperties"} & set(schema) else None,
        _string(schema) if {"minLength", "maxLength"} & set(schema) else None,
        _number(schema) if {"minimum", "maximum"} & set(schema) else None,
        _array(schema) if {"items", "prefixItems", "minItems", "maxItems"} & set(schema) else None,
        _one_of([_compile(s) for s in schema["oneOf"]]) if "oneOf" in schema else None,
        _any_of([_compile(s) for s in schema["anyOf"]]) if "anyOf" in schema else None,
    ]
    return _all([c for c in checks if c is not None])


def _all(checks: Sequence[Check]) -> Check:
    def check(doc: Any) -> bool | None:
        return _verdict(c(doc) for c in checks)

    return check


def _is_number(doc: Any) -> bool:
    return isinstance(doc, int | float) and not isinstance(doc, bool)


def _integer(doc: Any) -> bool | None:
    if isinstance(doc, float):
        return None  # 1.0 is an integer to JSON Schema: left to jsonschema
    return isinstance(doc, int) and not isinstance(doc, bool)


def _number_type(doc: Any) -> bool | None:
    if isinstance(doc, float) and not math.isfinite(doc):
        return None
    return _is_number(doc)


def _instance_of(kind: type) -> Check:
    return lambda doc: isinstance(doc, kind)


_TYPES: dict[str, Check] = {
    "integer": _integer,
    "number": _number_type,
    "string": _instance_of(str),
    "boolean": _instance_of(bool),
    "object": _instance_of(dict),
    "array": _instance_of(list),
    "null": _instance_of(type(None)),
}


def _type(spec: str | list[str]) -> Check:
    names = [spec] if isinstance(spec, str) else list(spec)
    if not set(names) <= set(_TYPES):
        raise Unsupported(spec)
    tests = [_TYPES[name] for name in names]
    if len(tests) == 1:
        return tests[0]

    def check(doc: Any) -> bool | None:
        verdicts = [test(doc) for test in tests]
        if True in verdicts:
            return True
        return None if None in verdicts else False

    return check


def _enum(values: list[Any]) -> Check:
    strings = frozenset(v for v in values if isinstance(v, str))

    def check(doc: Any) -> bool | None:
        if isinstance(doc, str):
            return doc in strings
        return None  # JSON equality of numbers, booleans and containers: left to jsonschema

    return check


def _object(schema: Mapping[str, Any]) -> Check:
    required = tuple(schema.get("required", ()))
    properties = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool):
        raise Unsupported("additionalProperties with a schema")

    def _property(name: str, value: Any) -> bool | None:
        sub = properties.get(name)
        return extra if sub is None else sub(value)  # an unlisted property: allowed or not, whatever its value

    def check(doc: Any) -> bool | None:
        if not isinstance(doc, dict):
            return True  # object keywords say nothing about other types
        if any(name not in doc for name in required):
            return False
        return _verdict(_property(name, value) for name, value in doc.items())

    return check


def _verdict(verdicts: Iterable[bool | None]) -> bool | None:
    """Every part holds: False at the first that fails (the rest are not checked), None if any is unsure."""
    unsure = False
    for verdict in verdicts:
        if verdict is False:
            return False
        unsure = unsure or verdict is None
    return None if unsure else True


def _string(schema: Mapping[str, Any]) -> Check:
    low, high = schema.get("minLength", 0), schema.get("maxLength", math.inf)

    def check(doc: Any) -> bool | None:
        return not isinstance(doc, str) or low <= len(doc) <= high

    return check


def _number(schema: Mapping[str, Any]) -> Check:
    low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)

    def check(doc: Any) -> bool | None:
        if not _is_number(doc):
            return True  # numeric bounds say nothing about other types
        if isinstance(doc, float) and not math.isfinite(doc):
            return None
        return low <= doc <= high

    return check


def _array(schema: Mapping[str, Any]) -> Check:
    prefix = [_compile(s) for s in schema.get("prefixItems", ())]
    rest = _compile(schema["items"]) if "items" in schema else None
    low, high = schema.get("minItems", 0), schema.get("maxItems", math.inf)

    def check(doc: Any) -> bool | None:
        if not isinstance(doc, list):
            return True  # array keywords say nothing about other types
        if not low <= len(doc) <= high:
            return False
        subs = (prefix[i] if i < len(prefix) else rest for i in range(len(doc)))
        return _verdict(True if sub is None else sub(item) for sub, item in zip(subs, doc, strict=True))

    return check


def _one_of(subs: Sequence[Check]) -> Check:
    def check(doc: Any) -> bool | None:
        verdicts = [s(doc) for s in subs]
        if None in verdicts:
            return None
        return verdicts.count(True) == 1

    return check


def _any_of(subs: Sequence[Check]) -> Check:
    def check(doc: Any) -> bool | None:
        verdicts = [s(doc) for s in subs]
        if True in verdicts:
            return True
        return None if None in verdicts else False

    return check
