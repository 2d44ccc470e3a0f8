"""Masking of secret payload fields in job detail, admin pages and logs.

A payload is stored as JSON, so its values cannot tell whether they are
secret. The masking walks the queue's payload model instead: every field typed
`SecretStr`, `SecretBytes` or `Secret[...]`, at any depth (nested models,
lists, tuples, dicts, optional and union types), is replaced by `MASK`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

import pydantic

MASK = "**********"

_SECRET_TYPES = (pydantic.SecretStr, pydantic.SecretBytes, pydantic.Secret)
_SEQUENCE_ORIGINS = (list, tuple, set, frozenset)


def mask_payload(payload: Any, model: type[pydantic.BaseModel] | None) -> Any:
    """Return a copy of `payload` with the secret fields of `model` masked.

    Args:
        payload: the payload as stored (JSON values).
        model: the queue's payload model; None leaves the payload as it is.
    """
    if model is None:
        return payload
    return _mask(payload, model)


def _is_secret(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, _SECRET_TYPES):
        return True
    return typing.get_origin(annotation) is pydantic.Secret


def _mask(value: Any, annotation: Any) -> Any:
    if value is None:
        return None
    if _is_secret(annotation):
        return MASK

    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _mask(value, arguments[0])
    if origin is typing.Union or origin is types.UnionType:
        return _mask_union(value, arguments)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return _mask_model(value, annotation)
    if origin in _SEQUENCE_ORIGINS and isinstance(value, list):
        return _mask_sequence(value, origin, arguments)
    if _is_mapping_type(origin) and isinstance(value, dict) and len(arguments) == 2:
        return {key: _mask(item, arguments[1]) for key, item in value.items()}
    return value


def _mask_union(value: Any, members: tuple[Any, ...]) -> Any:
    # The stored JSON does not say which member it was validated as, so the
    # value is masked as every member would mask it.
    if any(_is_secret(member) for member in members):
        return MASK
    for member in members:
        value = _mask(value, member)
    return value


def _mask_model(value: Any, model: type[pydantic.BaseModel]) -> Any:
    if not isinstance(value, dict):
        return value
    annotations: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        for key in (name, field.alias, field.serialization_alias):
            if key:
                annotations[key] = field.annotation
    return {
        key: _mask(item, annotations[key]) if key in annotations else item
        for key, item in value.items()
    }


def _mask_sequence(value: list[Any], origin: Any, arguments: tuple[Any, ...]) -> Any:
    if not arguments:
        return value
    if origin is tuple and not (len(arguments) == 2 and arguments[1] is Ellipsis):
        return [
            _mask(item, arguments[index]) if index < len(arguments) else item
            for index, item in enumerate(value)
        ]
    return [_mask(item, arguments[0]) for item in value]


def _is_mapping_type(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def model_has_secret(model: type[pydantic.BaseModel]) -> bool:
    """Tell whether any field of `model`, at any depth, is a secret type."""
    return _annotation_has_secret(model, set())


def _annotation_has_secret(annotation: Any, seen: set[int]) -> bool:
    if _is_secret(annotation):
        return True
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        # A model that refers to itself is walked once.
        if id(annotation) in seen:
            return False
        seen.add(id(annotation))
        return any(
            _annotation_has_secret(field.annotation, seen)
            for field in annotation.model_fields.values()
        )
    return any(
        _annotation_has_secret(argument, seen)
        for argument in typing.get_args(annotation)
        if argument is not Ellipsis
    )
