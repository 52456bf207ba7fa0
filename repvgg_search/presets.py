"""Named presets as data: a folder of YAML files (one preset each, named by its file) read into frozen records, and
the label of a named preset with some fields changed (`full+post_bn=true`, `cpu+iters=2`). Block variants, speed
protocols and quantization protocols are all presets of this kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import BadInputError

T = TypeVar("T")


def load_presets(
    folder: Path, build: Callable[[dict[str, Any]], T], *, skip: Iterable[str] = (), order: Iterable[str] = ()
) -> dict[str, T]:
    """`{name: build(fields)}` for every `folder/<name>.yaml` (but `skip`): a file that states a `name` must state
    its own file's; the names in `order` come first, in that order, the others alphabetically."""
    out: dict[str, T] = {}
    skipped = set(skip)
    for path in sorted(Path(folder).glob("*.yaml")):
        if path.stem in skipped:
            continue
        fields = yaml.safe_load(path.read_text()) or {}
        if fields.get("name", path.stem) != path.stem:
            raise BadInputError(f"{path}: name {fields['name']!r} differs from the file name (expected {path.stem!r})")
        out[path.stem] = build({"name": path.stem, **fields})
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def changed_label(name: str, changes: Mapping[str, Any]) -> str:
    """A named preset's name, with the fields that differ from it: `name+field=value,field=value`."""
    if not changes:
        return name
    return f"{name}+{','.join(f'{k}={show_value(v)}' for k, v in changes.items())}"


def show_value(value: Any) -> str:
    """A field's value as a label shows it: true/false/none, lists as [a,b]."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)
