"""Command lines from frozen ``Config`` dataclasses (flags, fields and ``config.json`` keys share names): the
defaults, then ``--preset`` (an entry of ``PRESETS``: field overrides), then the explicit flags."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import textwrap
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from common.errors import UserError

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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description as written and the line breaks of a flag's help (each line is wrapped on its own)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        lines: list[str] = []
        for line in text.splitlines():
            indent = line[:len(line) - len(line.lstrip())]
            lines += textwrap.wrap(line, width, subsequent_indent=indent + "  " if indent else "") or [""]
        return lines


def _escape(text: str) -> str:
    """``text`` as argparse help: a literal ``%`` is ``%%`` (argparse %-formats help strings)."""
    return text.replace("%", "%%")


def describe_overrides(overrides: Mapping[str, Any], limit: int = 6) -> str:
    """A one-line summary of a preset's overrides: ``sets width=32, n_epochs=6, ...``."""
    if not overrides:
        return "the defaults"
    items = [f"{k}={v!r}" for k, v in overrides.items()]
    shown = ", ".join(items[:limit])
    return f"sets {shown}" + (f" and {len(items) - limit} more" if len(items) > limit else "")


def preset_help(presets: Mapping[str, Mapping[str, Any]], descriptions: Mapping[str, str] | None = None) -> str:
    """The ``--preset`` help: one line per preset, its description (or a summary of its overrides)."""
    descriptions = descriptions or {}
    lines = ["named set of overrides, applied before the other flags:"]
    lines += [f"  {name}: {descriptions.get(name) or describe_overrides(presets[name])}" for name in sorted(presets)]
    return "\n".join(lines)


def build_parser(config_cls: type, presets: Mapping[str, Mapping[str, Any]], description: str,
                 prog: str | None = None,
                 preset_descriptions: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """An argparse parser with ``--preset`` (``preset_descriptions``: name -> one line) and a flag per field."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), default=None,
                        help=_escape(preset_help(presets, preset_descriptions)))
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        help_text = field.metadata.get("help", "")
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, type=_field_parser(hints[field.name]),
                            default=None, help=_escape(f"{help_text} (default: {field.default!r})"))
    return parser


def config_from_args(config_cls: type[T], presets: Mapping[str, Mapping[str, Any]], args: argparse.Namespace) -> T:
    """The ``config_cls`` of parsed flags: defaults, then the preset, then explicit flags (other ``args`` ignored)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {}
    if args.preset is not None:
        values.update(presets[args.preset])
    values.update({k: v for k, v in vars(args).items() if k in fields and v is not None})
    return config_cls(**values)


def parse_config(config_cls: type[T], presets: Mapping[str, Mapping[str, Any]], argv: Sequence[str] | None,
                 description: str = "", prog: str | None = None,
                 preset_descriptions: Mapping[str, str] | None = None) -> T:
    """Parses ``argv`` into a ``config_cls`` instance: defaults, then the preset, then explicit flags."""
    args = build_parser(config_cls, presets, description, prog, preset_descriptions).parse_args(argv)
    return config_from_args(config_cls, presets, args)


def with_preset(config_cls: type[T], presets: Mapping[str, Mapping[str, Any]], preset: str, **overrides: Any) -> T:
    """The config a test or notebook gets for ``--preset preset`` plus field overrides."""
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(presets))}")
    return config_cls(**{**presets[preset], **overrides})


def _flag_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(_flag_value(v) for v in value)
    return shlex.quote(str(value))


def command_line(prog: str, config: Any, skip: Sequence[str] = ()) -> str:
    """The command asking for ``config``: ``prog`` and ``--field-name value`` per non-default field not in ``skip``."""
    defaults = config.__class__()
    flags = [f"--{f.name.replace('_', '-')} {_flag_value(getattr(config, f.name))}"
             for f in dataclasses.fields(config)
             if f.name not in skip and getattr(config, f.name) != getattr(defaults, f.name)]
    return " ".join([prog, *flags])
