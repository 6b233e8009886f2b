"""The public schema: the one place a federation declares its columns.

The schema is agreed on and published before training. Everything that shapes
the networks' input space (numeric bounds, category lists, transforms) comes from
it, so no statistic is ever read from private data to build the codec.

Format (YAML)::

    columns:
      - {name: age, type: integer, min: 0, max: 100}
      - {name: income, type: continuous, min: 0, max: 250000, transform: log}
      - {name: region, type: categorical, categories: [north, south, east, west]}
      - {name: smoker, type: boolean}
      - {name: bmi, type: continuous, min: 10, max: 70, nullable: true}

``nullable: true`` (any type) allows missing cells (empty or NaN) in that column: the codec
carries a missing indicator, each site's DP histogram of the column counts the missing rows
in one more bin, and the synthetic table reproduces the DP missing rate. A missing cell in a
column not declared nullable is an error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedsynth.core.errors import SchemaError, UserError

NUMERIC_TYPES = ("continuous", "integer")
DISCRETE_TYPES = ("categorical", "boolean")
COLUMN_TYPES = NUMERIC_TYPES + DISCRETE_TYPES
TRANSFORMS = ("none", "log")
BOOLEAN_CATEGORIES = ("false", "true")

_COLUMN_KEYS = {"name", "type", "min", "max", "categories", "transform", "decimals", "nullable", "description"}
MAX_DECIMALS = 15


class _SchemaLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. PyYAML's default (YAML 1.1) would read the
    categories ``[yes, no]`` as booleans and silently stop matching the data."""


_SchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 also reads ``2e6`` as a number; PyYAML only knows ``2.0e+6``.
_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_SchemaLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))


class _SchemaDumper(yaml.SafeDumper):
    """Quotes strings such as ``'1e3'`` that the loader above would read as numbers."""


_SchemaDumper.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse YAML with 1.2-style booleans (shared by schema and policy files)."""
    return yaml.load(text, Loader=_SchemaLoader)


@dataclass(frozen=True)
class Column:
    """One declared column. Categories are kept as strings, in declared order."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    transform: str = "none"
    decimals: int | None = None  # continuous columns: digits after the point in the written table
    nullable: bool = False  # missing cells allowed (and reproduced at the DP missing rate)

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.is_numeric:
            out["min"] = int(self.min) if self.type == "integer" else self.min
            out["max"] = int(self.max) if self.type == "integer" else self.max
            if self.transform != "none":
                out["transform"] = self.transform
            if self.decimals is not None:
                out["decimals"] = self.decimals
        elif self.type == "categorical":
            out["categories"] = list(self.categories)
        if self.nullable:
            out["nullable"] = True
        return out


@dataclass(frozen=True)
class Schema:
    """An ordered list of columns plus where it was read from (for messages)."""

    columns: tuple[Column, ...]
    source: str = "<schema>"
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.columns})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"{self.source}: no column named '{name}'") from None

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}


def category_label(value: Any) -> str:
    """Canonical string form of a category value (YAML may give bools or numbers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(source: str, name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{source}: column '{name}': '{key}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SchemaError(f"{source}: column '{name}': '{key}' must be finite, got {value!r}")
    return float(value)


def _parse_column(source: str, index: int, raw: Any) -> Column:
    if not isinstance(raw, dict):
        raise SchemaError(f"{source}: columns[{index}] must be a mapping with name and type")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SchemaError(f"{source}: columns[{index}]: 'name' must be a non-empty string")
    unknown = sorted(set(raw) - _COLUMN_KEYS)
    if unknown:
        raise SchemaError(f"{source}: column '{name}': unknown key(s) {', '.join(unknown)}")
    ctype = raw.get("type")
    if ctype not in COLUMN_TYPES:
        raise SchemaError(f"{source}: column '{name}': 'type' must be one of {', '.join(COLUMN_TYPES)}, got {ctype!r}")
    nullable = raw.get("nullable", False)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{source}: column '{name}': 'nullable' must be true or false, got {nullable!r}")
    if ctype in NUMERIC_TYPES:
        for key in ("min", "max"):
            if key not in raw:
                raise SchemaError(f"{source}: column '{name}': {ctype} column needs '{key}'")
        lo = _number(source, name, "min", raw["min"])
        hi = _number(source, name, "max", raw["max"])
        if lo >= hi:
            raise SchemaError(f"{source}: column '{name}': 'min' ({lo:g}) must be below 'max' ({hi:g})")
        if ctype == "integer" and not (lo.is_integer() and hi.is_integer()):
            raise SchemaError(f"{source}: column '{name}': integer bounds must be whole numbers")
        transform = raw.get("transform", "none")
        if transform not in TRANSFORMS:
            raise SchemaError(
                f"{source}: column '{name}': 'transform' must be one of {', '.join(TRANSFORMS)}, got {transform!r}"
            )
        if "categories" in raw:
            raise SchemaError(f"{source}: column '{name}': a {ctype} column takes no 'categories'")
        decimals = raw.get("decimals")
        if decimals is not None:
            if ctype != "continuous":
                raise SchemaError(f"{source}: column '{name}': 'decimals' is for continuous columns")
            if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
                raise SchemaError(
                    f"{source}: column '{name}': 'decimals' must be a whole number from 0 to {MAX_DECIMALS}, "
                    f"got {decimals!r}"
                )
        return Column(name=name, type=ctype, min=lo, max=hi, transform=transform, decimals=decimals, nullable=nullable)

    for key in ("min", "max", "transform", "decimals"):
        if key in raw:
            raise SchemaError(f"{source}: column '{name}': a {ctype} column takes no '{key}'")
    if ctype == "boolean":
        if "categories" in raw:
            raise SchemaError(f"{source}: column '{name}': a boolean column takes no 'categories'")
        return Column(name=name, type=ctype, categories=BOOLEAN_CATEGORIES, nullable=nullable)
    cats = raw.get("categories")
    if not isinstance(cats, list) or len(cats) < 2:
        raise SchemaError(f"{source}: column '{name}': 'categories' must list at least two values")
    labels = [category_label(c) for c in cats]
    dupes = sorted({c for c in labels if labels.count(c) > 1})
    if dupes:
        raise SchemaError(f"{source}: column '{name}': duplicate categories {', '.join(dupes)}")
    return Column(name=name, type=ctype, categories=tuple(labels), nullable=nullable)


def parse_schema(raw: Any, source: str = "<schema>") -> Schema:
    """Validate an already-loaded YAML document and build a ``Schema``."""
    if not isinstance(raw, dict) or "columns" not in raw:
        raise SchemaError(f"{source}: top level must be a mapping with a 'columns' list")
    extra = sorted(set(raw) - {"columns", "description"})
    if extra:
        raise SchemaError(f"{source}: unknown top-level key(s) {', '.join(extra)}")
    raw_columns = raw["columns"]
    if not isinstance(raw_columns, list) or not raw_columns:
        raise SchemaError(f"{source}: 'columns' must be a non-empty list")
    columns = [_parse_column(source, i, c) for i, c in enumerate(raw_columns)]
    seen: set[str] = set()
    for col in columns:
        if col.name in seen:
            raise SchemaError(f"{source}: column '{col.name}' is declared twice")
        seen.add(col.name)
    return Schema(columns=tuple(columns), source=source)


def read_yaml_file(path: str | Path, kind: str, error: type[UserError]) -> Any:
    """Parse a YAML file (schema, policy, sweep: ``kind``); a missing, unreadable or
    malformed file is a one-line ``error`` naming the file (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {kind} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {kind} file ({exc})") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}: invalid YAML{where}") from None


def load_schema(path: str | Path) -> Schema:
    """Read and validate a schema file; every problem is a one-line ``SchemaError``."""
    return parse_schema(read_yaml_file(path, "schema", SchemaError), source=str(path))


def dump_schema_text(schema: Schema, header: str = "") -> str:
    """A schema as YAML text, one flow-style mapping per column."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append("columns:")
    for col in schema.columns:
        flow = yaml.dump(col.to_dict(), Dumper=_SchemaDumper, default_flow_style=True, sort_keys=False, width=10_000)
        lines.append("  - " + flow.strip())
    return "\n".join(lines) + "\n"


def dump_schema(schema: Schema, path: str | Path, header: str = "") -> None:
    """Write a schema as YAML."""
    Path(path).write_text(dump_schema_text(schema, header), encoding="utf-8")
