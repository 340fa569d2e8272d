"""Config errors that name the dotted key: shared by every YAML-backed config.

Pure (text in, lines out), so the gateway and the experiment runner report
problems the same way: `file: dotted.key: what is wrong`, one line each.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A config is unreadable or invalid; the message has one line per problem."""


class KeyedError(ValueError):
    """A cross-field problem that belongs to a key below the validator's level.

    The formatter appends `key` to the error's location, so a model-level check
    still reports `load: ...` rather than a bare message.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def parse_yaml(text: str, source: str) -> Any:
    """YAML text → data; a syntax error is a ConfigError with its line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def validate(model: type[BaseModel], data: Any, source: str) -> Any:
    """`model.model_validate(data)`, with every problem as a `source: key: message` line."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {line}" for line in format_errors(exc, model)]
        raise ConfigError("\n".join(lines)) from None


def format_errors(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One `dotted.key: message` line per pydantic error."""
    lines = []
    for err in exc.errors():
        # "[key]" marks a bad dict key; the key itself is the part before it.
        loc = [str(p) for p in err["loc"] if p != "[key]"]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, KeyedError):
            loc.append(ctx_error.key)
            message = str(ctx_error)
        elif err["type"] == "extra_forbidden":
            allowed = allowed_keys(root, loc[:-1])
            message = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        else:
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        key = ".".join(loc)
        lines.append(f"{key}: {message}" if key else message)
    return lines


def allowed_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the model found at `loc` below `root` (empty if not a model)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) in (dict, tuple, list):
            # A dict's values, or a sequence's items: the part is a key or an index.
            tp = get_args(tp)[-1 if get_origin(tp) is dict else 0]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """The model or container inside Optional[...] / Annotated[...] (or `tp` itself)."""
    for candidate in _members(tp):
        if get_origin(candidate) in (dict, tuple, list) or (
            isinstance(candidate, type) and issubclass(candidate, BaseModel)
        ):
            return candidate
    return tp


def _members(tp: Any) -> Iterator[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        yield from _members(get_args(tp)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(tp):
            yield from _members(arg)
    else:
        yield tp
