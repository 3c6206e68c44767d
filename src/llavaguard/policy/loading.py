"""Reading policy data that anyone may have written: YAML/JSON files and parsed objects.

Policies arrive from files a user made carelessly and, through the server, from clients. PyYAML
as it comes builds nested collections recursively (5,000 nested brackets end in a
RecursionError), turns integer literals into Python ints (which refuse more than 4,300 digits)
and lets a repeated key silently replace the first. Here each of these is a PolicyError of
one line naming the file and line, raised before anything recurses; data handed over already
parsed (an inline policy in a request) gets the same depth bound, checked without recursion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

from llavaguard.errors import PolicyError

MAX_DEPTH = 32  # a policy nests 4 levels (policy > categories > category > bullets)
MAX_POLICY_BYTES = 64 * 1024 * 1024  # 100,000 categories take about 20 MB
MAX_INT_CHARS = 100  # no policy field is a number; this only keeps int() fast and quiet

_MERGE = "tag:yaml.org,2002:merge"


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting, refuses repeated keys and oversized integers."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # The composer recurses once per level: count the levels before it goes deeper.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[tuple[str, str], int] = {}
        for i, (key, _) in enumerate(node.value if isinstance(node, MappingNode) else ()):
            if not isinstance(key, ScalarNode) or key.tag == _MERGE:
                continue  # merged keys may be overridden, as YAML intends
            j = first.setdefault((key.tag, key.value), i)
            if j != i:
                line = node.value[j][0].start_mark.line + 1
                problem = f"duplicate key {_short(key.value)} (first on line {line})"
                raise ConstructorError(None, None, problem, key.start_mark)
        return super().construct_mapping(node, deep)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _bounded_int(loader: yaml.SafeLoader, node: ScalarNode) -> int:
    if len(node.value) > MAX_INT_CHARS:
        raise ConstructorError(
            None, None, f"a number of {len(node.value)} characters is too long", node.start_mark
        )
    return loader.construct_yaml_int(node)


_PolicyLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)


def load_policy_text(path: Path) -> Any:
    """The data of a YAML or JSON policy file, or a PolicyError naming the file and line."""
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: policy file of {size} bytes is over the limit of "
                              f"{MAX_POLICY_BYTES} bytes")  # fmt: skip
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"{path}: cannot read policy file ({e.__class__.__name__}: {e})") from e
    return _load_json(text, path) if path.suffix.lower() == ".json" else _load_yaml(text, path)


def _load_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_PolicyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise PolicyError(f"{where}: invalid YAML: {e.problem or e.context}") from e
    except yaml.reader.ReaderError as e:
        raise PolicyError(f"{path}: invalid YAML: {e.reason} (character {e.position})") from e
    except Exception as e:  # whatever else PyYAML trips on is the file's fault
        # A value the parser accepts but cannot build: a date of month 13, an empty !!int.
        why = f" ({str(e)[:80]})" if type(e) is ValueError else ""
        raise PolicyError(f"{path}: invalid YAML: a value that cannot be read{why}") from e


class _Refused(ValueError):
    """Raised from inside the JSON decoder's hooks."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {_short(key)}")
        out[key] = value
    return out


def _bounded_json_int(text: str) -> int:
    if len(text) > MAX_INT_CHARS:
        raise _Refused(f"a number of {len(text)} characters is too long")
    return int(text)


def _load_json(text: str, path: Path) -> Any:
    """JSON files through the C decoder (20 times faster than PyYAML on a large policy), with
    the same refusals as YAML: repeated keys, oversized numbers, nesting past the decoder."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_int=_bounded_json_int)
    except json.JSONDecodeError as e:
        raise PolicyError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    except _Refused as e:
        raise PolicyError(f"{path}: invalid JSON: {e}") from e
    except RecursionError as e:
        raise PolicyError(f"{path}: invalid JSON: nested deeper than {MAX_DEPTH} levels") from e


def check_depth(data: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse data nested deeper than ``limit`` levels, or that contains itself (a YAML
    alias inside its own anchor), without recursing. Each collection's height is kept, so
    parts shared through aliases are walked once: linear in the data's size."""
    if not isinstance(data, dict | list | tuple):
        return
    height: dict[int, int] = {}
    path: list[tuple[Any, Any, int]] = [(data, _children(data), 0)]
    on_path = {id(data)}
    while path:
        node, children, tallest = path[-1]
        for child in children:
            if not isinstance(child, dict | list | tuple):
                continue
            if id(child) in on_path:
                raise PolicyError(f"{where}: the policy contains itself (a recursive alias)")
            known = height.get(id(child))
            if known is None and len(path) < limit:
                path.append((child, _children(child), 0))
                on_path.add(id(child))
                break
            if known is None or len(path) + known > limit:
                raise PolicyError(f"{where}: nested deeper than {limit} levels")
            tallest = max(tallest, known)
            path[-1] = (node, children, tallest)
        else:
            path.pop()
            on_path.discard(id(node))
            height[id(node)] = tallest + 1
            if path:
                parent, siblings, parent_tallest = path[-1]
                path[-1] = (parent, siblings, max(parent_tallest, tallest + 1))


def _children(node: Any) -> Any:
    return iter(node.values() if isinstance(node, dict) else node)
