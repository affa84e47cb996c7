"""The fast schema check says "valid" or "invalid" only where jsonschema agrees; otherwise it says it is not sure."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thud_mt.results import CaseResult, results_schema
from thud_mt.schema_fast import fast_check

RECORD = CaseResult(
    case="shift: clip-1 sync",
    model="listener",
    fingerprint="listener/v1",
    relation="shift",
    probe="sync",
    clip="clip-1",
    params={"offset_s": 0.5},
    paraphrase=2,
    question="Is the sound in sync with the picture?",
    edit="audio delayed by 0.500 s",
    source_answer="synchronized",
    followup_answer="audio delayed",
    source_value="synchronized",
    followup_value="audio_delayed",
    source_truth="synchronized",
    expected="audio_delayed",
    source_correct=True,
    followup_correct=True,
    verdict="pass",
    reason="moved as expected",
    samples=3,
    pass_rate=2 / 3,
    interval=(0.2, 0.94),
    seconds=0.01,
).to_json()

VALIDATOR = jsonschema.Draft202012Validator(results_schema())
CHECK = fast_check(results_schema())

# Values that break (or, for some fields, keep) the record's schema in every way it has.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 0.5, -0.5, 1.5, 2.0]),
    st.sampled_from(["", "pass", "fail", "error", "x"]),
    st.lists(st.floats(-1, 2, allow_nan=False), max_size=3),
    st.dictionaries(st.sampled_from(["offset_s", "donor"]), st.integers(0, 2), max_size=2),
)


def test_every_record_the_framework_writes_is_plainly_valid() -> None:
    assert CHECK is not None
    assert CHECK(RECORD) is True
    assert CHECK({**RECORD, "interval": None, "pass_rate": None, "samples": 1}) is True


@pytest.mark.parametrize(
    "change",
    [{"verdict": "maybe"}, {"unknown": 1}, {"paraphrase": -1}, {"interval": [0.2]}, {"case": ""}, {"samples": True}],
)
def test_plain_breaks_of_a_record_are_definitely_invalid(change: dict[str, Any]) -> None:
    assert CHECK is not None
    assert CHECK({**RECORD, **change}) is False
    assert CHECK({k: v for k, v in RECORD.items() if k != "verdict"}) is False


@given(
    changes=st.dictionaries(st.sampled_from([*sorted(RECORD), "unknown"]), ODD_VALUES, max_size=3),
    dropped=st.lists(st.sampled_from(sorted(RECORD)), max_size=2),
)
def test_a_definite_answer_always_agrees_with_jsonschema(changes: dict[str, Any], dropped: list[str]) -> None:
    doc = copy.deepcopy(RECORD)
    doc.update(changes)
    for key in dropped:
        doc.pop(key, None)
    assert CHECK is not None
    verdict = CHECK(doc)
    if verdict is not None:
        assert verdict == VALIDATOR.is_valid(doc), doc


@pytest.mark.parametrize(
    ("schema", "doc", "verdict"),
    [
        ({"type": "integer"}, 3, True),
        ({"type": "integer"}, 3.0, None),  # an integer to JSON Schema: jsonschema decides
        ({"type": "integer"}, True, False),
        ({"type": "number", "minimum": 0}, -1, False),
        ({"type": ["string", "null"], "minLength": 1}, None, True),
        ({"enum": ["a", "b"]}, "c", False),
        ({"enum": [1, 2]}, 1, None),
        ({"oneOf": [{"type": "null"}, {"type": "array", "minItems": 2, "maxItems": 2}]}, [1, 2], True),
        ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, 3, False),  # both match: not exactly one
    ],
)
def test_each_rule_matches_json_schema(schema: dict[str, Any], doc: Any, verdict: bool | None) -> None:
    check = fast_check(schema)
    assert check is not None
    assert check(doc) is verdict
    if verdict is not None:
        assert jsonschema.Draft202012Validator(schema).is_valid(doc) is verdict


@pytest.mark.parametrize(
    "schema",
    [{"type": "string", "pattern": "^a"}, {"$ref": "#/$defs/x"}, {"additionalProperties": {"type": "string"}}],
)
def test_a_schema_with_other_keywords_gets_no_fast_path(schema: dict[str, Any]) -> None:
    assert fast_check(schema) is None
