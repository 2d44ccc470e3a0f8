"""Payload validation and the checks that keep unstorable JSON out of jsonb."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from pgjobs.config import Queue, format_validation_errors
from pgjobs.errors import PayloadValidationError

# Deeper JSON is rejected before PostgreSQL does it with a generic error.
MAX_DEPTH = 64


def _path(parts: tuple[str | int, ...]) -> str:
    return "payload" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts
    )


def find_unstorable(value: Any, parts: tuple[str | int, ...] = ()) -> str | None:
    """Return why `value` cannot be stored in a jsonb column, or None.

    PostgreSQL rejects NUL characters in jsonb strings and keys, JSON has no
    NaN or infinity, and lone UTF-16 surrogates cannot be encoded as UTF-8.
    """
    if len(parts) > MAX_DEPTH:
        return f"{_path(parts)} is nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        return _check_string(value, f"{_path(parts)}")
    if isinstance(value, float) and not math.isfinite(value):
        return f"{_path(parts)} is {value!r}; JSON has no NaN or infinity"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{_path(parts)} has a non-string key {key!r}"
            problem = _check_string(key, f"key {key!r} in {_path(parts)}")
            problem = problem or find_unstorable(item, (*parts, key))
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = find_unstorable(item, (*parts, index))
            if problem:
                return problem
    return None


def _check_string(text: str, where: str) -> str | None:
    if "\x00" in text:
        return f"{where} contains a NUL character (\\x00), which jsonb cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{where} contains a lone surrogate, which UTF-8 cannot encode"
    return None


def to_json_payload(
    queue_name: str, definition: Queue[Any], payload: Any, *, max_bytes: int
) -> dict[str, Any]:
    """Validate `payload` for a queue and return it as a JSON-ready dict.

    Raises:
        PayloadValidationError: the payload fails the queue's model, is not a
            JSON object, cannot be stored, or is larger than `max_bytes`.
    """
    model = definition.payload_model
    if model is not None:
        data = _validate_model(queue_name, model, payload)
    elif isinstance(payload, pydantic.BaseModel):
        data = payload.model_dump(mode="json")
    elif isinstance(payload, Mapping):
        data = _plain_json(queue_name, payload)
    else:
        raise PayloadValidationError(
            queue_name,
            f"expected a JSON object (a dict) or a pydantic model, got "
            f"{type(payload).__name__}",
        )
    problem = find_unstorable(data)
    if problem:
        raise PayloadValidationError(queue_name, problem)
    size = len(json.dumps(data, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise PayloadValidationError(
            queue_name,
            f"payload is {size} bytes of JSON, over max_payload_bytes "
            f"({max_bytes}); store large data elsewhere and send a reference",
        )
    return data


def _validate_model(
    queue_name: str, model: type[pydantic.BaseModel], payload: Any
) -> dict[str, Any]:
    try:
        if isinstance(payload, model):
            instance = payload
        elif isinstance(payload, pydantic.BaseModel):
            instance = model.model_validate(payload.model_dump())
        else:
            instance = model.model_validate(payload)
        dumped: dict[str, Any] = instance.model_dump(mode="json")
    except pydantic.ValidationError as exc:
        details = "; ".join(format_validation_errors(exc))
        raise PayloadValidationError(
            queue_name, f"does not match {model.__name__}: {details}"
        ) from None
    except pydantic_core.PydanticSerializationError as exc:
        raise PayloadValidationError(
            queue_name, f"cannot be serialised to JSON: {exc}"
        ) from None
    return dumped


def _plain_json(queue_name: str, payload: Mapping[Any, Any]) -> dict[str, Any]:
    problem = find_unstorable(payload)
    if problem:
        raise PayloadValidationError(queue_name, problem)
    try:
        data = pydantic_core.to_jsonable_python(payload)
    except pydantic_core.PydanticSerializationError as exc:
        raise PayloadValidationError(
            queue_name, f"cannot be serialised to JSON: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise PayloadValidationError(queue_name, "expected a JSON object")
    return data


def load_payload(definition: Queue[Any], data: Any) -> Any:
    """Build the handler's argument from a stored payload."""
    model = definition.payload_model
    if model is None:
        return data
    return model.model_validate(data)
