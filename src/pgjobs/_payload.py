"""Payload validation and the checks that keep unstorable JSON out of jsonb."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pydantic
import pydantic_core

from pgjobs.errors import (
    PayloadValidationError,
    describe_location,
    describe_validation_errors,
)

if TYPE_CHECKING:
    from pgjobs.config import Queue

# Deeper JSON is rejected here, with the path, before PostgreSQL or the JSON
# encoder fail on it with a generic error (or Python hits its recursion limit).
MAX_DEPTH = 64
# json.dumps, which psycopg's Jsonb uses, refuses to write an int of more
# than 4300 digits (Python's default int-to-str limit); 13,000 bits is about
# 3,900 digits.
MAX_INT_BITS = 13_000


def _path(parts: tuple[str | int, ...]) -> str:
    return "payload" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts
    )


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return (
            "contains a NUL character (\\x00), which jsonb cannot store; remove "
            "it or send the data encoded, e.g. as base64"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate, which UTF-8 cannot encode"
    return None


def _find_problem(
    value: Any, parts: tuple[str | int, ...] = ()
) -> tuple[str, str] | None:
    """Return (path, reason) of the first value jsonb cannot store, or None."""
    if len(parts) > MAX_DEPTH:
        return _path(parts), f"is nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        reason = _string_problem(value)
        return (_path(parts), reason) if reason else None
    if isinstance(value, float) and not math.isfinite(value):
        return _path(parts), f"is {value!r}; JSON has no NaN or infinity"
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        return _path(parts), f"is an integer of more than {MAX_INT_BITS} bits"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return _path(parts), f"has a non-string key {key!r}"
            reason = _string_problem(key)
            if reason:
                return _path(parts), f"has a key {key!r} that {reason}"
            problem = _find_problem(item, (*parts, key))
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _find_problem(item, (*parts, index))
            if problem:
                return problem
    return None


def find_unstorable(value: Any) -> str | None:
    """Return why `value` cannot be stored in a jsonb column, or None.

    PostgreSQL rejects NUL characters in jsonb strings and keys, JSON has no
    NaN or infinity, and lone UTF-16 surrogates cannot be encoded as UTF-8.
    The reason starts with the path of the value, such as `payload.a[2]`.
    """
    problem = _find_problem(value)
    return f"{problem[0]} {problem[1]}" if problem else None


def _check_storable(queue_name: str, value: Any) -> None:
    problem = _find_problem(value)
    if problem:
        path, reason = problem
        raise PayloadValidationError(queue_name, f"{path} {reason}", field=path)


def to_json_payload(
    queue_name: str,
    model: type[pydantic.BaseModel] | None,
    payload: Any,
    *,
    max_bytes: int,
) -> dict[str, Any]:
    """Validate `payload` for a queue and return it as a JSON-ready dict.

    With a model, `payload` is an instance of it or a mapping it accepts;
    the result loads back into an equal model in the handler. Without one,
    `payload` is any mapping of JSON-serialisable values (or a model).

    Raises:
        PayloadValidationError: the payload fails the queue's model, is not a
            JSON object, cannot be stored, or is larger than `max_bytes`.
    """
    if model is not None:
        data = _dump_model_payload(queue_name, model, payload)
    else:
        data = _dump_plain_payload(queue_name, payload)
    _check_storable(queue_name, data)
    _check_size(queue_name, data, max_bytes)
    return data


def _dump_model_payload(
    queue_name: str, model: type[pydantic.BaseModel], payload: Any
) -> dict[str, Any]:
    if isinstance(payload, Mapping):
        _check_storable(queue_name, payload)
        instance = _validate(queue_name, model, payload)
    elif isinstance(payload, model):
        instance = payload
    else:
        raise PayloadValidationError(
            queue_name,
            f"expected a {model.__name__} or a mapping, got "
            f"{type(payload).__name__}; send the queue's own payload model",
        )
    data = _dump(queue_name, instance)
    # The handler receives model_validate(data): check now that it loads, so
    # a model whose JSON form does not validate fails at send, not in a worker.
    _validate(queue_name, model, data)
    return data


def _validate(
    queue_name: str, model: type[pydantic.BaseModel], data: Any
) -> pydantic.BaseModel:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = describe_validation_errors(exc, root="payload")
        locations = [error["loc"] for error in exc.errors()]
    field = describe_location(locations[0], "payload") if len(locations) == 1 else None
    raise PayloadValidationError(
        queue_name,
        f"does not match {model.__name__}: {'; '.join(problems)}",
        field=field,
    )


def _dump(queue_name: str, instance: pydantic.BaseModel) -> dict[str, Any]:
    # by_alias: model_validate reads fields by alias, so the stored form must
    # use aliases to load back. warnings="error": a value of the wrong type
    # (in an instance built with model_construct) fails instead of warning.
    try:
        data: dict[str, Any] = instance.model_dump(
            mode="json", by_alias=True, warnings="error"
        )
        if _has_secret(instance):
            data = _dump_revealing_secrets(instance)
    except (pydantic_core.PydanticSerializationError, ValueError) as exc:
        message = f"cannot be serialised to JSON: {exc}"
    else:
        return data
    raise PayloadValidationError(queue_name, message)


_SECRET_TYPES = (pydantic.SecretStr, pydantic.SecretBytes, pydantic.Secret)


def _has_secret(value: Any) -> bool:
    if isinstance(value, _SECRET_TYPES):
        return True
    if isinstance(value, pydantic.BaseModel):
        return any(_has_secret(item) for item in value.__dict__.values())
    if isinstance(value, Mapping):
        return any(_has_secret(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_secret(item) for item in value)
    return False


def _reveal(value: Any) -> Any:
    if isinstance(value, _SECRET_TYPES):
        return value.get_secret_value()
    if isinstance(value, Mapping):
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(item) for item in value]
    return value


def _dump_revealing_secrets(instance: pydantic.BaseModel) -> dict[str, Any]:
    # pydantic's JSON dump writes every secret as "**********", so the handler
    # would receive the mask instead of the value. The secret is stored as
    # sent; the admin page and the logs mask it by the payload model.
    python_form = instance.model_dump(mode="python", by_alias=True, warnings="error")
    data: dict[str, Any] = pydantic_core.to_jsonable_python(_reveal(python_form))
    return data


def _dump_plain_payload(queue_name: str, payload: Any) -> dict[str, Any]:
    if isinstance(payload, pydantic.BaseModel):
        return _dump(queue_name, payload)
    if not isinstance(payload, Mapping):
        raise PayloadValidationError(
            queue_name,
            "expected a JSON object (a dict) or a pydantic model, got "
            f"{type(payload).__name__}",
        )
    # Checked before conversion too, which would recurse without limit into
    # a self-referencing dict and drop the path of a bad value.
    _check_storable(queue_name, payload)
    try:
        data = pydantic_core.to_jsonable_python(payload)
    except (pydantic_core.PydanticSerializationError, ValueError) as exc:
        message = f"cannot be serialised to JSON: {exc}"
    else:
        return dict(data)
    raise PayloadValidationError(queue_name, message)


def _check_size(queue_name: str, data: dict[str, Any], max_bytes: int) -> None:
    try:
        size = len(pydantic_core.to_json(data))
    except (pydantic_core.PydanticSerializationError, ValueError) as exc:
        raise PayloadValidationError(
            queue_name, f"cannot be serialised to JSON: {exc}"
        ) from None
    if size > max_bytes:
        raise PayloadValidationError(
            queue_name,
            f"payload is {size} bytes of JSON, over max_payload_bytes "
            f"({max_bytes}); store large data elsewhere and send a reference",
            field="payload",
        )


def load_payload(definition: Queue[Any], data: Any) -> Any:
    """Build the handler's argument from a stored payload."""
    model = definition.payload_model
    if model is None:
        return data
    return model.model_validate(data)
