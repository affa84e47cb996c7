"""The JSON Schemas shipped in ``thud_mt/schemas/``: loading them, and the first problem of a document."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema


@cache
def load_schema(filename: str) -> dict[str, Any]:
    """One schema (draft 2020-12) of ``thud_mt/schemas/``, read once per process."""
    text = resources.files("thud_mt").joinpath(f"schemas/{filename}").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def validator(filename: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(filename))


def first_problem(filename: str, doc: Any) -> str | None:
    """The first schema error of ``doc`` as ``at /pointer: message (and N more)``, or None if valid."""
    errors = sorted(validator(filename).iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    first = errors[0]
    pointer = "/" + "/".join(str(p) for p in first.absolute_path)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"at {pointer}: {first.message}{more}"
