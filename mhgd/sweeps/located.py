"""A YAML document plus the line of every key, so errors can point into the sweep file."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mhgd.errors import ConfigError

KeyPath = tuple[Hashable, ...]


class SweepFileError(ConfigError):
    """A sweep file that cannot work; the message starts with ``file:line:``."""

    def __init__(self, file: Path, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")


@dataclass(frozen=True)
class Located:
    """The parsed document and where each key (or list item) was written."""

    file: Path
    data: Any
    lines: dict[KeyPath, int]

    def line(self, *path: Hashable) -> int:
        """Line of ``path``, or of its nearest written ancestor (1 for the whole file)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def error(self, message: str, *path: Hashable) -> SweepFileError:
        return SweepFileError(self.file, self.line(*path), message)


def _collect_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SweepFileError(file, line, f"{key!r} appears twice; keep one")
            seen.add(key)
            lines[(*path, key)] = line
            _collect_lines(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _collect_lines(item, (*path, index), lines, file)


def load_located(file: str | Path) -> Located:
    """Parse ``file``; a YAML syntax error is reported with its line too."""
    path = Path(file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read sweep file {path}: {exc.strerror}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise SweepFileError(path, line, f"not valid YAML: {exc.problem}") from exc
    lines: dict[KeyPath, int] = {}
    if root is not None:
        _collect_lines(root, (), lines, path)
    return Located(path, data, lines)
