"""The machinery of the config schema: how a field is declared, validated, coerced and built from a mapping.

Each field is declared once with :func:`setting` (its description, bounds and whether it may change while
running) beside its type (choices as ``Literal``) and default; validation, coercion of YAML / ROS parameter /
``--set`` values, the nodes' parameter descriptors and ``deal-ros train --set help`` all read that declaration.
The schema itself is deal_ros.config.schema; reading files is deal_ros.config.loading.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from deal_ros.errors import DealRosError


class ConfigError(DealRosError, ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config '{key}': {message}")


# -- the declaration of one field -------------------------------------------------------------------

SETTING = "deal_ros.setting"
"""Key of a field's :class:`Setting` in ``dataclasses.field(metadata=...)``."""


def _number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


_TYPE_HINTS: dict[type, dict[str, Any]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a config dataclass (read on every validation and update: computed once)."""
    if cls not in _TYPE_HINTS:
        _TYPE_HINTS[cls] = typing.get_type_hints(cls)
    return _TYPE_HINTS[cls]


@dataclass(frozen=True)
class Bounds:
    """An interval of numbers, each end closed, open or absent, optionally on an integer grid."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    step: int = 0
    """Integer grid: the value is low + a multiple of step (0 = any value)."""

    def __bool__(self) -> bool:
        return self.low is not None or self.high is not None

    def too_low(self, value: float) -> bool:
        return self.low is not None and (value <= self.low if self.low_open else value < self.low)

    def too_high(self, value: float) -> bool:
        return self.high is not None and (value >= self.high if self.high_open else value > self.high)

    def off_grid(self, value: float) -> bool:
        return bool(self.step and self.low is not None and (value - self.low) % self.step)

    def admits(self, value: float) -> bool:
        return not (self.too_low(value) or self.too_high(value) or self.off_grid(value))

    def text(self) -> str:
        """'in [32, 4096]', 'in (0, 10]', '>= 0', '> 0', '<= 1', with the grid: 'a multiple of 16 in [32, 4096]'."""
        if self.low is not None and self.high is not None:
            interval = (f"in {'(' if self.low_open else '['}{_number_text(self.low)}, "
                        f"{_number_text(self.high)}{')' if self.high_open else ']'}")
        elif self.low is not None:
            interval = f"{'>' if self.low_open else '>='} {_number_text(self.low)}"
        else:
            assert self.high is not None, "text() of no bounds"  # callers ask only when bool(bounds)
            interval = f"{'<' if self.high_open else '<='} {_number_text(self.high)}"
        if not self.step:
            return interval
        grid = (f"a multiple of {self.step}" if self.low is None or self.low % self.step == 0
                else f"{_number_text(self.low)} + a multiple of {self.step}")
        return f"{grid} {interval}" if interval.startswith("in ") else f"{grid}, {interval}"


@dataclass(frozen=True)
class Setting:
    """What a config field declares besides its type and default."""

    doc: str
    """One paragraph: the ROS parameter description, the comment in config/onboard.yaml, `--set help`."""
    bounds: Bounds = Bounds()
    runtime: bool = False
    """The online trainer and the segmenter apply a change between steps (`ros2 param set` works)."""


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, step: int = 0, runtime: bool = False) -> Any:
    """A dataclass field with its declaration: doc, bounds (ge/gt: lower, le/lt: upper, step: grid), run-time flag."""
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise TypeError("give one lower bound (ge or gt) and one upper bound (le or lt)")
    bounds = Bounds(low=gt if gt is not None else ge, high=lt if lt is not None else le,
                    low_open=gt is not None, high_open=lt is not None, step=step)
    metadata = {SETTING: Setting(" ".join(doc.split()), bounds, runtime)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def choices_of(hint: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` type allows; () for any other type."""
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def check_value(key: str, value: Any, hint: Any, bounds: Bounds) -> None:
    """Refuse (ConfigError) a coerced value outside its field's choices (a ``Literal`` `hint`) or `bounds`."""
    options = choices_of(hint)
    if options and value not in options:
        raise ConfigError(f"config '{key}': must be one of {list(options)}, got {value!r}")
    if bounds and not bounds.admits(value):
        raise ConfigError(f"config '{key}': must be {bounds.text()}, got {value!r}")


class Section:
    """Base of the schema's dataclasses: :meth:`validate` checks every field against its declaration
    (choices, bounds), the sub-sections likewise, then :meth:`check_relations`."""

    def validate(self) -> None:
        prefix = _section_prefixes()[type(self)]
        hints = type_hints(type(self))
        assert dataclasses.is_dataclass(self)  # every section is a @dataclass
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section):
                value.validate()
                continue
            check_value(prefix + f.name, value, hints[f.name], f.metadata[SETTING].bounds)
        self.check_relations()

    def check_relations(self) -> None:
        """Rules a single field's declaration cannot state (between fields, or a value's form); none here."""


@dataclass(frozen=True)
class ConfigKey:
    """One leaf of the schema under its dotted key, with what its field declares."""

    key: str
    hint: Any
    """The field's type: bool, int, float, str, list[str] or a Literal of str or int."""
    default: Any
    setting: Setting

    @property
    def choices(self) -> tuple[Any, ...]:
        return choices_of(self.hint)


def _walk_keys(cls: type, instance: Any, prefix: str) -> typing.Iterator[ConfigKey]:
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):  # a sub-section
            yield from _walk_keys(type(value), value, f"{prefix}{f.name}.")
        else:
            yield ConfigKey(f"{prefix}{f.name}", hints[f.name], value, f.metadata[SETTING])


_ROOT: list[type] = []
"""The schema's root section (deal_ros.config.schema.DealRosConfig), registered by :func:`schema_root`."""


def schema_root(cls: type) -> type:
    """Class decorator of the schema's root: keys and section prefixes are read from its tree."""
    _ROOT[:] = [cls]
    return cls


def section_keys(cls: type) -> tuple[ConfigKey, ...]:
    """Every leaf of a dataclass tree declared with :func:`setting` (DealRosConfig, the nodes' own parameters), in
    declaration order, under its dotted key, with its default and declaration."""
    return tuple(_walk_keys(cls, cls(), ""))


@lru_cache(maxsize=1)
def config_keys() -> tuple[ConfigKey, ...]:
    """Every leaf of DealRosConfig, in declaration order, with its default and declaration."""
    (root,) = _ROOT
    return section_keys(root)


@lru_cache(maxsize=1)
def _section_prefixes() -> dict[type, str]:
    """Section class -> its dotted prefix in DealRosConfig ('loss.deal.'); each class has one place in the tree."""
    (root,) = _ROOT
    prefixes: dict[type, str] = {root: ""}

    def walk(cls: type, prefix: str) -> None:
        for name, hint in type_hints(cls).items():
            if isinstance(hint, type) and issubclass(hint, Section):
                prefixes[hint] = f"{prefix}{name}."
                walk(hint, f"{prefix}{name}.")

    walk(root, "")
    return prefixes


# -- building a section from a mapping ------------------------------------------------------------

def merge_into(node: dict[str, Any], value: dict[str, Any], key: str) -> None:
    """Merge a mapping into a config section in place; unknown keys are refused, naming them."""
    for name, item in value.items():
        dotted = f"{key}.{name}"
        check(name in node, dotted, f"unknown key (known: {sorted(node)})")
        if isinstance(node[name], dict) and isinstance(item, dict):
            merge_into(node[name], item, dotted)
        else:
            node[name] = item


def build(cls: type, data: Any, prefix: str) -> Any:
    """An instance of section `cls` from a (nested) mapping; unknown keys refused, values coerced."""
    check(isinstance(data, dict), prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    check(not unknown, prefix + (unknown[0] if unknown else ""), f"unknown key (known: {sorted(names)})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = prefix + name
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a section (a class, never an instance)
            kwargs[name] = build(hint, value, key + ".")
        else:
            kwargs[name] = coerce(value, hint, key)
    return cls(**kwargs)


_NUMBER = re.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A number as people write it. YAML 1.1 (PyYAML) reads 1e-4, 1E3 and 1.5e3 as strings: they are numbers here."""


def _number(value: Any) -> int | float | None:
    """An int or float from a YAML value (a number, or a string in number form); None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip().replace("_", "")
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    return None


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as read from YAML, a ROS parameter or --set, converted to the field type `hint` (key: for messages)."""
    origin = typing.get_origin(hint)
    if origin is Literal:  # the type of its values; whether the value is one of them is validate's to say
        (kind,) = {type(choice) for choice in typing.get_args(hint)}
        return coerce(value, kind, key)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        check(isinstance(value, (list, tuple)), key, f"expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [coerce(v, item, key) for v in value]
    if hint is bool:
        check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if hint is int:
        number = _number(value)
        check(number is not None and float(number).is_integer(), key, f"expected an integer, got {value!r}")
        assert number is not None
        return int(number)
    if hint is float:
        number = _number(value)
        check(number is not None, key, f"expected a number, got {value!r}")
        assert number is not None
        check(math.isfinite(number), key, f"must be a finite number, got {value!r}")
        return float(number)
    if hint is str:
        check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(f"config '{key}': unsupported type {hint}")
