"""No JSON ``true`` or ``false`` where a request field takes a number.

Pydantic's lax mode reads a boolean as 1 or 0 for an ``int`` or ``float`` field, so ``{"top_k": true}`` asked for
one result and ``{"face_id": true}`` searched with face 1, each answering 200. Form fields are text and still read
as numbers ("5"); only a real boolean, which only a JSON body can carry, is refused, naming the field.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

_NUMBERS = (int, float)


def _takes_a_number_only(annotation: Any) -> bool:
    """Whether a field of this annotation takes int or float (optionally None) but not bool."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _takes_a_number_only(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
    else:
        kinds = [annotation]
    return bool(kinds) and bool not in kinds and all(k in _NUMBERS for k in kinds)


@functools.cache
def number_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names (and aliases) of ``model``'s fields that take a number and not a boolean."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        if _takes_a_number_only(field.annotation):
            names.add(name)
            if field.alias:
                names.add(field.alias)
    return frozenset(names)


class NoBooleanNumbers(BaseModel):
    """A request model whose number fields refuse JSON booleans (see the module docstring)."""

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any) -> Any:
        if isinstance(data, dict):
            numbers = number_fields(cls)
            for key, value in data.items():
                if isinstance(value, bool) and key in numbers:
                    raise PydanticCustomError(
                        "number_type",
                        "{field} takes a number, not {value}",
                        {"field": key, "value": str(value).lower()},
                    )
        return data
