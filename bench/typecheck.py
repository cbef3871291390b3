"""Checks TOML values against Python annotations, so a wrong type fails before training, not mid-grid."""

from __future__ import annotations

import functools
import inspect
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any, Literal, Union

from bench.errors import did_you_mean
from bench.registry import PluginWarning


def type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "any value"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(annotation, "__name__", str(annotation))


def matches(value: Any, annotation: Any) -> bool:
    """True if a TOML value fits the annotation. Ints are accepted for floats; bools are not ints."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation we cannot check (a Protocol, a string we cannot resolve): let the call decide


def check_call_args(factory: Callable, args: dict, where: str, skip: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming `where` if `args` would not bind to `factory` or a value has the wrong type."""
    sig = inspect.signature(factory)
    params = {n: p for n, p in sig.parameters.items() if n not in skip and p.kind not in (p.VAR_POSITIONAL,)}
    hints = resolved_hints(factory, params, where)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    allowed = [n for n, p in params.items() if p.kind is not p.VAR_KEYWORD]
    for key, value in args.items():
        if key not in allowed and not takes_kwargs:
            raise ValueError(f"{where}: unknown argument {key!r}; {did_you_mean(key, allowed)}it takes {', '.join(allowed) or 'no arguments'}")
        annotation = hints.get(key, inspect.Parameter.empty)
        if not matches(value, annotation):
            raise ValueError(f"{where}: argument {key!r} = {value!r} should be {type_name(annotation)}")
    required = [n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [n for n in required if n not in args]
    if missing:
        raise ValueError(f"{where}: missing required argument {missing[0]!r}")


def resolved_hints(factory: Callable, params: dict[str, inspect.Parameter], where: str) -> dict[str, Any]:
    """The parameters' annotations with string (postponed) hints evaluated; a hint that cannot be is left out.

    `typing.get_type_hints` gives all hints or raises, so one bad hint (a name the plugin never imported)
    would turn off checking of every argument. On failure, resolve each parameter's hint alone, and warn
    about the ones that cannot be.
    """
    target = factory.func if isinstance(factory, functools.partial) else factory  # timm/<name> is a partial
    target = target.__init__ if isinstance(target, type) else target  # a class's own hints are its attributes
    try:
        hints = typing.get_type_hints(target)
        return {n: hints.get(n, p.annotation) for n, p in params.items()}
    except Exception:
        pass
    module_globals = getattr(inspect.unwrap(target), "__globals__", None)
    hints = {}
    for name, param in params.items():
        if param.annotation is param.empty:
            continue
        try:  # the same resolution as get_type_hints, for this hint alone
            holder = types.SimpleNamespace(__annotations__={name: param.annotation})
            hints[name] = typing.get_type_hints(holder, globalns=module_globals)[name]
        except Exception as exc:
            warnings.warn(
                f"{where}: cannot resolve the type hint {param.annotation!r} of argument {name!r} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())}); its values are not type-checked",
                PluginWarning,
                stacklevel=3,
            )
    return hints
