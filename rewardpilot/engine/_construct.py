"""Building already-valid pydantic models without re-validating them.

``BaseModel.model_construct`` walks every field and its aliases on each
call; the recommendation path builds several models per transaction, so
``builder`` precomputes that walk once per model class. It does exactly what
``model_construct`` does for models without aliases, extra fields or
``model_post_init``, and falls back to ``model_construct`` otherwise.
tests/test_engine.py checks that a built recommendation equals the same one
validated from scratch.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
_set = object.__setattr__
_MUTABLE = (list, dict, set)


def builder(cls: type[M]) -> Callable[..., M]:
    """Return ``build(**values) -> cls`` that trusts its values (no validation)."""
    fields = cls.__pydantic_fields__
    plain = (
        not cls.__pydantic_post_init__
        and not getattr(cls, "__pydantic_root_model__", False)
        and cls.model_config.get("extra") != "allow"
        and all(field.alias is None and field.validation_alias is None for field in fields.values())
    )
    if not plain:
        return cls.model_construct

    fixed: list[tuple[str, Any]] = []
    fresh: list[tuple[str, Any]] = []
    for name, field in fields.items():
        if field.is_required():
            continue
        if field.default_factory is not None:
            fresh.append((name, field.default_factory))
            continue
        default = field.default
        if isinstance(default, _MUTABLE):
            fresh.append((name, lambda default=default: copy.copy(default)))
        else:
            fixed.append((name, default))
    required = frozenset(name for name, field in fields.items() if field.is_required())

    def build(**values: Any) -> M:
        fields_set = set(values)
        if not required <= fields_set:
            raise TypeError(f"{cls.__name__} needs {sorted(required - fields_set)}")
        for name, default in fixed:
            if name not in fields_set:
                values[name] = default
        for name, factory in fresh:
            if name not in fields_set:
                values[name] = factory()
        model = _new(cls)
        _set(model, "__dict__", values)
        _set(model, "__pydantic_fields_set__", fields_set)
        _set(model, "__pydantic_extra__", None)
        _set(model, "__pydantic_private__", None)
        return model

    return build
