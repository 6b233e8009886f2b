"""The federation's data-sovereignty policy: one YAML file every party agrees on.

Format (every key but ``allowed_jurisdictions`` is optional)::

    name: hi-federation                      # free text, recorded in the report
    description: ...                         # free text
    allowed_jurisdictions: [us-south, us-west]
    epsilon_caps: {us-south: 1.0}            # a site under us-south may spend at most ε = 1
    release:
      no_copies: true                        # no synthetic row identical to a site's row (default true)
      min_distance: 0.05                     # none closer than this in encoded space (0: rule off)
      small_cells:
        quasi_identifiers: [region, race]    # discrete schema columns
        k: 5                                 # combinations seen fewer than k times ...
        action: suppress                     # ... are removed (suppress) or set to "*" (generalise)
      forbidden_columns: [wght]              # never released
      forbidden_values: {race: [other]}      # rows holding these are never released

Every problem is a one-line ``PolicyError`` naming the file and the field. YAML is
read with 1.2 booleans (``tabular.schema.load_yaml``), so ``[yes, no]`` stays text.
``Policy.digest`` is the SHA-256 of the policy's canonical JSON (normalised values,
sorted keys): two files that say the same thing have the same digest.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsynth.core.errors import UserError
from fedsynth.tabular.schema import Schema, category_label, read_yaml_file

SMALL_CELL_ACTIONS = ("suppress", "generalise")
GENERALISED = "*"  # the released value of a generalised quasi-identifier (outside the schema's domain)
_TOP_KEYS = ("name", "description", "allowed_jurisdictions", "epsilon_caps", "release")
_RELEASE_KEYS = ("no_copies", "min_distance", "small_cells", "forbidden_columns", "forbidden_values")
_SMALL_CELL_KEYS = ("quasi_identifiers", "k", "action")


class PolicyError(UserError):
    """The policy file is malformed or does not fit the schema."""


@dataclass(frozen=True)
class SmallCells:
    """Quasi-identifier combinations seen fewer than ``k`` times are suppressed or generalised."""

    quasi_identifiers: tuple[str, ...]
    k: int
    action: str


@dataclass(frozen=True)
class ReleaseRules:
    """What the final synthetic table must satisfy before it is released."""

    no_copies: bool = True
    min_distance: float = 0.0
    small_cells: SmallCells | None = None
    forbidden_columns: tuple[str, ...] = ()
    forbidden_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """A validated policy. Build it with ``load_policy`` or ``parse_policy``."""

    allowed_jurisdictions: tuple[str, ...]
    epsilon_caps: Mapping[str, float] = field(default_factory=dict)
    release: ReleaseRules = field(default_factory=ReleaseRules)
    name: str = ""
    description: str = ""
    source: str = "<policy>"

    def to_dict(self) -> dict[str, Any]:
        """The policy in force as plain JSON values (what the digest covers; ``source`` is not part of it)."""
        cells = self.release.small_cells
        return {
            "name": self.name,
            "description": self.description,
            "allowed_jurisdictions": list(self.allowed_jurisdictions),
            "epsilon_caps": dict(sorted(self.epsilon_caps.items())),
            "release": {
                "no_copies": self.release.no_copies,
                "min_distance": self.release.min_distance,
                "small_cells": None
                if cells is None
                else {"quasi_identifiers": list(cells.quasi_identifiers), "k": cells.k, "action": cells.action},
                "forbidden_columns": list(self.release.forbidden_columns),
                "forbidden_values": {k: list(v) for k, v in sorted(self.release.forbidden_values.items())},
            },
        }

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``to_dict()``."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def admits(self, jurisdiction: str | None) -> bool:
        """Whether a site under ``jurisdiction`` may take part (a site that declares none may not)."""
        return jurisdiction is not None and str(jurisdiction).strip() in self.allowed_jurisdictions

    def epsilon_cap(self, jurisdiction: str, default: float) -> float:
        """The ε cap for ``jurisdiction``, or ``default`` where the policy sets none.

        A site's budget is ``min(run epsilon, policy.epsilon_cap(jurisdiction, run epsilon))``.
        """
        return float(self.epsilon_caps.get(str(jurisdiction).strip(), default))

    def screen_sites(self, declared: Mapping[str, str | None]) -> dict[str, Any]:
        """Split sites (name -> declared jurisdiction, None if none) into admitted and excluded, with reasons."""
        admitted, excluded = [], {}
        for site, jurisdiction in sorted(declared.items()):
            if jurisdiction is None or not str(jurisdiction).strip():
                excluded[site] = "declared no jurisdiction"
            elif not self.admits(jurisdiction):
                excluded[site] = f"jurisdiction '{jurisdiction}' is not among the policy's allowed_jurisdictions"
            else:
                admitted.append(site)
        return {"admitted": admitted, "excluded": excluded, "jurisdictions": dict(sorted(declared.items()))}

    def check_schema(self, schema: Schema) -> None:
        """Raise ``PolicyError`` when the policy names a column or value the schema does not declare."""
        names = set(schema.names)

        def column(where: str, name: str) -> None:
            if name not in names:
                raise PolicyError(f"{self.source}: {where}: column '{name}' is not in the schema {schema.source}")

        release = self.release
        for name in release.forbidden_columns:
            column("release.forbidden_columns", name)
        if set(release.forbidden_columns) >= names:
            raise PolicyError(f"{self.source}: release.forbidden_columns: forbids every column of {schema.source}")
        for name, values in release.forbidden_values.items():
            column("release.forbidden_values", name)
            col = schema.column(name)
            if col.is_numeric:
                raise PolicyError(
                    f"{self.source}: release.forbidden_values: column '{name}' is numeric; only discrete columns "
                    "can have forbidden values"
                )
            unknown = [v for v in values if v not in col.categories]
            if unknown:
                raise PolicyError(
                    f"{self.source}: release.forbidden_values.{name}: value(s) {', '.join(unknown)} not among the "
                    f"column's categories in {schema.source}"
                )
        if release.small_cells is not None:
            where = "release.small_cells.quasi_identifiers"
            for name in release.small_cells.quasi_identifiers:
                column(where, name)
                if schema.column(name).is_numeric:
                    raise PolicyError(
                        f"{self.source}: {where}: column '{name}' is numeric; quasi-identifiers must be discrete "
                        "(categorical or boolean) columns"
                    )
                if name in release.forbidden_columns:
                    raise PolicyError(f"{self.source}: {where}: column '{name}' is also in release.forbidden_columns")


# ---------------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------------
class _Fields:
    """Typed access to one mapping of the file, with errors that name the file and the field."""

    def __init__(self, source: str, where: str, raw: Any, allowed: tuple[str, ...]) -> None:
        self.source, self.where = source, where
        if not isinstance(raw, dict):
            self.fail(where or "top level", f"must be a mapping, got {_kind(raw)}")
        unknown = [str(k) for k in raw if k not in allowed]
        if unknown:
            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(allowed)})"
            self.fail(self.path(unknown[0]), f"unknown key{hint}")
        self.raw = raw

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, where: str, message: str) -> None:
        raise PolicyError(f"{self.source}: {where}: {message}")

    def text(self, key: str) -> str:
        value = self.raw.get(key, "")
        if not isinstance(value, str):
            self.fail(self.path(key), f"must be text, got {_kind(value)}")
        return value

    def names(self, key: str, required: bool = False) -> tuple[str, ...]:
        """A list of distinct non-empty strings."""
        if key not in self.raw:
            if required:
                self.fail(self.path(key), "is required")
            return ()
        value = self.raw[key]
        if not isinstance(value, list) or (required and not value):
            self.fail(self.path(key), f"must be a non-empty list of names, got {_kind(value)}")
        out = []
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.fail(self.path(key), f"every entry must be a non-empty name, got {_kind(item)}")
            if item.strip() in out:
                self.fail(self.path(key), f"'{item.strip()}' is listed twice")
            out.append(item.strip())
        return tuple(out)

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(self.path(key), f"must be a number, got {_kind(value)}")
        if value < minimum:
            self.fail(self.path(key), f"must be at least {minimum:g}, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(self.path(key), f"must be true or false, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list) and not value:
        return "an empty list"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{type(value).__name__} {value!r}"


def _small_cells(source: str, raw: Any) -> SmallCells | None:
    if raw is None:
        return None
    f = _Fields(source, "release.small_cells", raw, _SMALL_CELL_KEYS)
    qis = f.names("quasi_identifiers", required=True)
    if "k" not in raw:
        f.fail(f.path("k"), "is required")
    k = raw["k"]
    if isinstance(k, bool) or not isinstance(k, int):
        f.fail(f.path("k"), f"must be a whole number, got {_kind(k)}")
    if k < 2:
        f.fail(f.path("k"), f"must be at least 2 (k = 1 suppresses nothing), got {k}")
    action = raw.get("action", "suppress")
    if action not in SMALL_CELL_ACTIONS:
        close = difflib.get_close_matches(str(action), SMALL_CELL_ACTIONS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        f.fail(f.path("action"), f"must be one of {', '.join(SMALL_CELL_ACTIONS)}, got {_kind(action)}{hint}")
    return SmallCells(quasi_identifiers=qis, k=int(k), action=str(action))


def _forbidden_values(source: str, raw: Any) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        where = "release.forbidden_values"
        raise PolicyError(f"{source}: {where}: must be a mapping of column to values, got {_kind(raw)}")
    out = {}
    for column, values in raw.items():
        where = f"release.forbidden_values.{column}"
        if not isinstance(values, list) or not values:
            raise PolicyError(f"{source}: {where}: must be a non-empty list of values, got {_kind(values)}")
        if any(isinstance(v, (dict, list)) or v is None for v in values):
            raise PolicyError(f"{source}: {where}: every entry must be a single value")
        out[str(column)] = tuple(dict.fromkeys(category_label(v) for v in values))
    return out


def _release(source: str, raw: Any) -> ReleaseRules:
    if raw is None:
        return ReleaseRules()
    f = _Fields(source, "release", raw, _RELEASE_KEYS)
    return ReleaseRules(
        no_copies=f.flag("no_copies", True),
        min_distance=f.number("min_distance", 0.0),
        small_cells=_small_cells(source, raw.get("small_cells")),
        forbidden_columns=f.names("forbidden_columns"),
        forbidden_values=_forbidden_values(source, raw.get("forbidden_values")),
    )


def parse_policy(raw: Any, source: str = "<policy>") -> Policy:
    """Validate an already-loaded YAML document and build a ``Policy``."""
    top = _Fields(source, "", raw, _TOP_KEYS)
    allowed = top.names("allowed_jurisdictions", required=True)
    caps_raw = raw.get("epsilon_caps") or {}
    if not isinstance(caps_raw, dict):
        top.fail("epsilon_caps", f"must be a mapping of jurisdiction to ε, got {_kind(caps_raw)}")
    caps = {}
    for jurisdiction, value in caps_raw.items():
        where = f"epsilon_caps.{jurisdiction}"
        if str(jurisdiction) not in allowed:
            top.fail(where, f"'{jurisdiction}' is not among allowed_jurisdictions")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            top.fail(where, f"must be a positive number, got {_kind(value)}")
        caps[str(jurisdiction)] = float(value)
    return Policy(
        allowed_jurisdictions=allowed,
        epsilon_caps=caps,
        release=_release(source, raw.get("release")),
        name=top.text("name"),
        description=top.text("description"),
        source=source,
    )


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; every problem is a one-line ``PolicyError`` naming file and field."""
    return parse_policy(read_yaml_file(path, "policy", PolicyError), source=str(path))
