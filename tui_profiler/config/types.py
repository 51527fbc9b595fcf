"""The building blocks of the preset model: strict sections, constrained numbers, one-or-many lists, and
`rule(...)`, the error a cross-field check raises (turned into one line by `errors.PresetError`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

RULE_ERROR = "preset_rule"


def rule(fieldname: str, value: Any, allowed: str) -> PydanticCustomError:
    """A cross-field problem, raised from a validator: `fieldname` is relative to the validated model."""
    return PydanticCustomError(
        RULE_ERROR, "preset rule", {"field": fieldname, "value": value, "allowed": allowed}
    )


# ---------------------------------------------------------------------------------------- field types


def _one_or_many(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _integral(value: Any) -> Any:
    """2.0 is the integer 2 (TOML and `--set` may write it so); 2.5 and true stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _string_table(value: Any) -> Any:
    if isinstance(value, dict) and all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value.values()
    ):
        return {str(k): str(v) for k, v in value.items()}
    return value


def _threads(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return str(value)
    if isinstance(value, str) and (value in ("auto", "host") or (value.isdigit() and int(value) >= 1)):
        return value
    raise ValueError("threads")


# Markers for `Annotated[...]` fields: an integral float is an int; one value alone is a list of one.
Integral = BeforeValidator(_integral)
OneOrMany = BeforeValidator(_one_or_many)


StringTable = Annotated[
    dict[str, str],
    BeforeValidator(_string_table),
    Field(json_schema_extra={"allowed": 'a table of NAME = "value" strings'}),
]
Threads = Annotated[str, BeforeValidator(_threads)]


class Section(BaseModel):
    """A table of a preset file: strict types, unknown keys refused, immutable once validated."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=False)
