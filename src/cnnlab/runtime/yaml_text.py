"""YAML read as plain settings: safe types only, no aliases (a few hundred bytes of nested aliases expand to
billions of values: the 'billion laughs'), no key given twice (the last would silently win)."""
from __future__ import annotations

import yaml


class _PlainLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, f"line {mark.line + 1}: an alias (*name); cnnlab's YAML "
                                              f"files take none", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # merge keys (<<) first, as SafeLoader does
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own message names it
                break
            if repeated:
                raise yaml.constructor.ConstructorError(None, None, f"line {key_node.start_mark.line + 1}: the key "
                                                        f"{str(key)[:60]!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """The one YAML document of `text`, as yaml.safe_load reads it, but refusing aliases and repeated keys
    (yaml.YAMLError, whose first line says where)."""
    return yaml.load(text, Loader=_PlainLoader)
