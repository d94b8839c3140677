"""Command lines built from frozen dataclasses: one vocabulary for flags, fields and ``config.json`` keys.

Every script defines ``@dataclass(frozen=True) class Config`` with the paper's defaults and a dict of ``PRESETS``
(field overrides). ``parse_config(Config, PRESETS, argv)`` applies ``--preset`` first and the explicit flags after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any, help_text: str) -> Any:
    """A Config field with its ``--help`` text: ``lr: float = option(1e-2, "SG-HMC step size")``."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _field_parser(tp: Any):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _field_parser(args[0])
        return lambda s: None if s.lower() == "none" else inner(s)
    if origin is tuple:
        inner = _field_parser(typing.get_args(tp)[0])
        return lambda s: tuple(inner(v) for v in s.split(",") if v != "")
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    raise TypeError(f"unsupported config field type {tp!r}")


def build_parser(config_cls: type, presets: Mapping[str, Mapping[str, Any]],
                 description: str) -> argparse.ArgumentParser:
    """An argparse parser with ``--preset`` and one ``--field-name`` flag per dataclass field."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), default=None,
                        help="named set of overrides applied before the other flags")
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        help_text = field.metadata.get("help", "")
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, type=_field_parser(hints[field.name]),
                            default=None, help=f"{help_text} (default: {field.default!r})")
    return parser


def parse_config(config_cls: type[T], presets: Mapping[str, Mapping[str, Any]], argv: Sequence[str] | None,
                 description: str = "") -> T:
    """Parses ``argv`` into a ``config_cls`` instance: defaults, then the preset, then explicit flags."""
    args = build_parser(config_cls, presets, description).parse_args(argv)
    values: dict[str, Any] = {}
    if args.preset is not None:
        values.update(presets[args.preset])
    values.update({k: v for k, v in vars(args).items() if k != "preset" and v is not None})
    return config_cls(**values)


def with_preset(config_cls: type[T], presets: Mapping[str, Mapping[str, Any]], preset: str, **overrides: Any) -> T:
    """The config a test or notebook gets for ``--preset preset`` plus field overrides."""
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    return config_cls(**{**presets[preset], **overrides})
