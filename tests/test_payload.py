"""Payload checks: what jsonb cannot store is rejected with its path."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

import pgjobs
from pgjobs import _payload
from pgjobs._payload import MAX_DEPTH, find_unstorable, to_json_payload

Query = Callable[..., list[tuple[Any, ...]]]


class Item(pydantic.BaseModel):
    name: str
    price: decimal.Decimal


class Order(pydantic.BaseModel):
    items: list[Item]
    notes: dict[str, str] = {}
    due: datetime.datetime | None = None


class Lossy(pydantic.BaseModel):
    """A model whose JSON form does not validate back into it."""

    value: int

    @pydantic.field_serializer("value")
    def _as_text(self, value: int) -> str:
        return f"#{value}"


def plain(payload: Any, max_bytes: int = 1_000_000) -> dict[str, Any]:
    return to_json_payload("q", None, payload, max_bytes=max_bytes)


def modelled(payload: Any, model: type[pydantic.BaseModel] = Order) -> dict[str, Any]:
    return to_json_payload("q", model, payload, max_bytes=1_000_000)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"x": value}
    return value


def test_payload_nested_model_path() -> None:
    payload = {"items": [{"name": "a", "price": "1"}, {"name": "b\x00", "price": "2"}]}
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        modelled(payload)
    assert caught.value.field == "payload.items[1].name"


def test_payload_model_dict_key_nul() -> None:
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        modelled({"items": [], "notes": {"k\x00": "v"}})
    assert caught.value.field == "payload.notes"
    assert "key" in str(caught.value)


def test_payload_model_errors_listed() -> None:
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        modelled({"items": [{"name": 1}], "due": "soon"})
    message = str(caught.value)
    assert "payload.items[0].name" in message
    assert "payload.items[0].price" in message
    assert "payload.due" in message
    assert caught.value.field is None


def test_payload_depth_limit() -> None:
    assert plain(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    with pytest.raises(pgjobs.PayloadValidationError, match="deeper than 64"):
        plain(nested(MAX_DEPTH + 1))


def test_payload_cycle_rejected() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(pgjobs.PayloadValidationError, match="deeper than"):
        plain(cycle)


def test_payload_size_limit_exact() -> None:
    payload = {"a": "x" * 10}
    size = len('{"a":"xxxxxxxxxx"}')
    assert plain(payload, max_bytes=size) == payload
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        plain(payload, max_bytes=size - 1)
    assert f"is {size} bytes" in str(caught.value)


def test_payload_size_counts_utf8() -> None:
    payload = {"a": "é" * 10}
    size = len('{"a":""}') + 20
    assert plain(payload, max_bytes=size) == payload
    with pytest.raises(pgjobs.PayloadValidationError):
        plain(payload, max_bytes=size - 1)


def test_payload_huge_int_rejected() -> None:
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        plain({"n": 10**5000})
    assert caught.value.field == "payload.n"


def test_payload_big_int_kept() -> None:
    assert plain({"n": 2**200}) == {"n": 2**200}


def test_payload_bytes_rejected() -> None:
    with pytest.raises(pgjobs.PayloadValidationError, match="JSON"):
        plain({"raw": b"\xff\xfe"})


def test_payload_bytes_with_nul_rejected() -> None:
    with pytest.raises(pgjobs.PayloadValidationError, match="NUL"):
        plain({"raw": b"a\x00b"})


def test_payload_decimal_nan_text() -> None:
    assert plain({"d": decimal.Decimal("NaN")}) == {"d": "NaN"}


def test_payload_plain_converts_types() -> None:
    moment = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert plain({"at": moment, "tags": {"b"}, "t": (1,)}) == {
        "at": "2030-01-01T00:00:00Z",
        "tags": ["b"],
        "t": [1],
    }


def test_payload_plain_accepts_model() -> None:
    item = Item(name="a", price=decimal.Decimal("1.50"))
    assert plain(item) == {"name": "a", "price": "1.50"}


def test_payload_lossy_model_rejected() -> None:
    with pytest.raises(pgjobs.PayloadValidationError) as caught:
        modelled(Lossy(value=3), Lossy)
    assert caught.value.field == "payload.value"


def test_payload_constructed_instance_checked() -> None:
    broken = Item.model_construct(name="a", price="not a number")
    with pytest.raises(pgjobs.PayloadValidationError, match="price"):
        modelled(broken, Item)


def test_payload_subclass_instance_accepted() -> None:
    class Special(Item):
        pass

    assert modelled(Special(name="a", price=decimal.Decimal(1)), Item) == {
        "name": "a",
        "price": "1",
    }


def test_find_unstorable_reports_path() -> None:
    assert find_unstorable({"a": [1, {"b": float("inf")}]}) == (
        "payload.a[1].b is inf; JSON has no NaN or infinity"
    )


def test_find_unstorable_accepts_json() -> None:
    assert find_unstorable({"a": [1, 2.5, None, True, "ü", {"b": []}]}) is None


async def test_payload_stored_as_validated(make_system: Any, query: Query) -> None:
    jobs = make_system(queues={"orders": pgjobs.queue(Order)})
    job_id = await jobs.send(
        "orders", {"items": [{"name": "tea", "price": 2}], "due": "2030-01-01T12:00Z"}
    )
    [(args,)] = query("SELECT args FROM procrastinate_jobs WHERE id = %s", job_id)
    assert args == {
        "payload": {
            "items": [{"name": "tea", "price": "2"}],
            "notes": {},
            "due": "2030-01-01T12:00:00Z",
        }
    }


class _Credentials(pydantic.BaseModel):
    user: str
    token: pydantic.SecretStr
    backups: list[pydantic.SecretStr] = []


def test_payload_secret_fields_keep_their_value() -> None:
    definition = pgjobs.queue(_Credentials)
    payload = _Credentials(user="ada", token="s3cret", backups=["b1"])

    data = _payload.to_json_payload("creds", _Credentials, payload, max_bytes=10_000)
    loaded = _payload.load_payload(definition, data)

    assert loaded.token.get_secret_value() == "s3cret"
    assert loaded.backups[0].get_secret_value() == "b1"
