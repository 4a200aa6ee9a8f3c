"""Documentation of every key with its type, value, default and docstring (`una-hpc config`)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import config_schema
from .config_schema import Config, _section_types, _show


@functools.lru_cache(maxsize=1)
def _class_docs() -> dict[str, tuple[str, dict[str, str]]]:
    """Class name -> (class docstring, field -> the docstring under it), read from this module's source."""
    tree = ast.parse(Path(config_schema.__file__).read_text(encoding="utf-8"))
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        for a, b in zip(node.body, node.body[1:]):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                fields[a.target.id] = " ".join(b.value.value.split())
        out[node.name] = (" ".join((ast.get_docstring(node) or "").split()), fields)
    return out


def field_docs() -> dict[str, str]:
    """Dotted key -> its field docstring (whitespace collapsed), for every key of Config."""
    docs = _class_docs()
    return {
        f"{sec.name}.{f.name}": docs.get(type(section).__name__, ("", {}))[1].get(f.name, "")
        for sec in dataclasses.fields(Config)
        for section in [getattr(Config(), sec.name)]
        for f in dataclasses.fields(section)
    }


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


@dataclass(frozen=True)
class FieldInfo:
    key: str
    """Dotted name, e.g. trainer.batch_size."""
    type: str
    """int, float, bool, str, list[str], dict[str, float], or the choices a|b|c."""
    value: Any
    """The value in the config described."""
    default: Any
    doc: str


def config_fields(cfg: Config | None = None) -> list[FieldInfo]:
    """Every key of `cfg` (defaults when None), in declaration order."""
    cfg = cfg or Config()
    docs, defaults, out = field_docs(), Config(), []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        hints = _section_types(section)
        for f in dataclasses.fields(section):
            key = f"{sec.name}.{f.name}"
            out.append(
                FieldInfo(
                    key,
                    _type_name(hints[f.name]),
                    getattr(section, f.name),
                    getattr(getattr(defaults, sec.name), f.name),
                    docs.get(key, ""),
                )
            )
    return out


def describe(cfg: Config | None = None, width: int = 118) -> str:
    """Every key grouped by section: `key (type) = value`, `[default: x]` where the value differs, then its doc."""
    lines = [
        textwrap.fill(
            "Configuration keys: YAML sections, or `key.sub=value` on the command line. Values are "
            "this config's; [default: x] marks a changed one.",
            width,
        ),
        "",
    ]
    class_docs = _class_docs()
    by_section: dict[str, list[FieldInfo]] = {}
    for info in config_fields(cfg):
        by_section.setdefault(info.key.split(".", 1)[0], []).append(info)
    for sec in dataclasses.fields(Config):
        lines.append(f"[{sec.name}]")
        section_doc = class_docs.get(type(getattr(Config(), sec.name)).__name__, ("", {}))[0]
        if section_doc:
            lines.append(textwrap.fill(section_doc, width, initial_indent="  ", subsequent_indent="  "))
        for info in by_section.get(sec.name, []):
            head = f"  {info.key} ({info.type}) = {_show(info.value)}"
            if info.value != info.default:
                head += f"  [default: {_show(info.default)}]"
            lines.append(head)
            lines.append(
                textwrap.fill(info.doc or "(undocumented)", width, initial_indent="      ", subsequent_indent="      ")
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
