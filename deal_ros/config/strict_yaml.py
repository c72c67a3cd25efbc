"""The one YAML reader of deal_ros's own files (configs, tag schedules, ``--set`` values).

PyYAML's ``safe_load`` keeps only the last of two equal keys (a second ``train:`` section silently
replaces the first) and expands aliases by reference, so a 1 KB "billion laughs" file becomes a tree
that no walk over it finishes. Here a repeated key is refused naming both lines, and an anchor or alias
is refused when it is composed, before anything walks the tree. Errors are ``yaml.YAMLError``\\ s, so a
caller's existing handling of bad YAML applies.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

__all__ = ["load_yaml"]


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and repeated mapping keys."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise ComposerError(None, None, f"line {event.start_mark.line + 1}: anchors and aliases "
                                f"({sign}{event.anchor}) are not allowed; write the value out", None)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # '<<' merge keys out first, as the base does
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise ConstructorError(None, None, f"key {key!r} is given twice (line {first_line[key]} and "
                                           f"line {line}); keep one", None)
                first_line[key] = line
            except TypeError:
                continue  # an unhashable key: the base constructor refuses it
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """Parse YAML `text` like ``yaml.safe_load``, but refuse repeated keys and anchors/aliases (yaml.YAMLError)."""
    return yaml.load(text, Loader=_StrictSafeLoader)
