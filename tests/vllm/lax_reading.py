"""What vLLM's request parsing accepts beyond the JSON types our spec declares.

vLLM reads request bodies with pydantic models in lax mode: `true`/`false` count as integers, `" 3"` and `"1_0"`
as integers, `1.0` as an integer, `"yes"`/`"T"`/`0`/`1` as booleans. The spec declares the strict JSON types (what a
client should send, and what the generated client sends); a negative fuzz case whose only "violations" are
values pydantic reads as the declared type is therefore no negative case for the real server. `lax_valid`
decides that with pydantic itself, so the rule is pydantic's, not a copy of it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticError

_READERS: dict[str, TypeAdapter[Any]] = {
    "integer": TypeAdapter(int),
    "number": TypeAdapter(float),
    "boolean": TypeAdapter(bool),
    "string": TypeAdapter(str),
}
_MAX_REPAIRS = 32


def request_validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for one request schema whose `#/components/...` references resolve inside `spec`."""
    return Draft202012Validator({**schema, "components": spec.get("components", {})})


def lax_valid(validator: Draft202012Validator, body: Any) -> bool:
    """True when `body`, read the way pydantic's lax mode reads JSON, is valid for the strict schema."""
    body = copy.deepcopy(body)
    for _ in range(_MAX_REPAIRS):
        errors = list(validator.iter_errors(body))
        if not errors:
            return True
        repaired = next((r for e in errors if (r := _coerced(e)) is not None), None)
        if repaired is None:
            return False
        path, value = repaired
        body = _replace(body, path, value)
    return False


def _coerced(error: ValidationError) -> tuple[list[Any], Any] | None:
    """The first type error (here or in an anyOf/oneOf branch) that pydantic would coerce away, and the value."""
    for leaf in [error, *_leaves(error)]:
        if leaf.validator != "type":
            continue
        expected = leaf.validator_value if isinstance(leaf.validator_value, list) else [leaf.validator_value]
        for kind in expected:
            reader = _READERS.get(kind)
            if reader is None:
                continue
            try:
                value = reader.validate_json(json.dumps(leaf.instance))
            except PydanticError:
                continue
            if kind == "integer" and isinstance(value, bool):
                value = int(value)
            return list(leaf.absolute_path), value
    return None


def _leaves(error: ValidationError) -> list[ValidationError]:
    found: list[ValidationError] = []
    for child in error.context or ():
        found += [child, *_leaves(child)]
    return found


def _replace(body: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body
