"""`edge-agent tags`: edit the tag list in the config file, and read tags live from the PLC.

Edits are a ruamel.yaml round trip: comments, key order, quoting and flow style survive; the
new file is validated with the same `parse_config` the daemon uses before it replaces the old
one (atomically: a temp file in the same directory, fsynced, then renamed). A tag that a
machine's signals still use cannot be removed, because the result would not validate.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.config import Config, parse_config
from edge_agent.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _yaml(text: str):
    from ruamel.yaml import YAML

    y = YAML()  # round-trip
    y.preserve_quotes = True
    y.width = 4096
    mapping, sequence, offset = _indents(text)
    y.indent(mapping=mapping, sequence=sequence, offset=offset)
    return y


def _indents(text: str) -> tuple[int, int, int]:
    """Guess the file's indentation so untouched lines come out byte for byte."""
    mapping, offset = 2, 2
    m = re.search(r"^[A-Za-z_][^\n:]*:[ \t]*(?:#.*)?\n(?:[ \t]*(?:#.*)?\n)*( +)[A-Za-z_]", text, re.MULTILINE)
    if m:
        mapping = len(m.group(1))
    m = re.search(r"^[A-Za-z_][^\n:]*:[ \t]*(?:#.*)?\n(?:[ \t]*(?:#.*)?\n)*( *)- ", text, re.MULTILINE)
    if m:
        offset = len(m.group(1))
    return mapping, offset + 2, offset


def load(path: Path) -> tuple[Any, Any, str]:
    text = path.read_text(encoding="utf-8")
    y = _yaml(text)
    return y, y.load(text), text


def dump(y: Any, data: Any) -> str:
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


@contextlib.contextmanager
def _placeholder_env(text: str) -> Iterator[None]:
    """Validation of an edit must not fail on a secret this shell does not have."""
    missing = [name for name in _ENV.findall(text) if name not in os.environ]
    for name in missing:
        os.environ[name] = "placeholder"
    try:
        yield
    finally:
        for name in missing:
            os.environ.pop(name, None)


def validate_text(text: str, source: str) -> Config:
    with _placeholder_env(text):
        return parse_config(text, source)


def write_atomic(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _tags_seq(data: Any):
    from ruamel.yaml.comments import CommentedSeq

    tags = data.get("tags")
    if tags is None:
        tags = CommentedSeq()
        data["tags"] = tags
    return tags


def _move_trailing_comment(src: Any, dst: Any) -> None:
    """The blank line / comment after the last list item belongs to it in ruamel: hand it on."""
    if not hasattr(src, "ca") or not hasattr(dst, "ca") or not src:
        return
    last_key = list(src.keys())[-1]
    entry = src.ca.items.get(last_key)
    if entry and len(entry) > 2 and entry[2] is not None:
        token = entry[2]
        entry[2] = None
        dst_key = list(dst.keys())[-1]
        dst_entry = dst.ca.items.setdefault(dst_key, [None, None, None, None])
        dst_entry[2] = token


def add_tag(path: Path, tag: dict[str, Any]) -> str:
    """The new file text with `tag` appended to `tags` (validated; raises ConfigError)."""
    from ruamel.yaml.comments import CommentedMap

    y, data, _ = load(path)
    tags = _tags_seq(data)
    if any(isinstance(t, dict) and t.get("name") == tag["name"] for t in tags):
        raise ConfigError([f"{path}: a tag named {tag['name']!r} exists already"])
    new = CommentedMap()
    for k, v in tag.items():
        if v is None:
            continue
        if k == "address" and isinstance(v, str) and re.search(r"[:;#,\[\]{}]", v):
            from ruamel.yaml.scalarstring import DoubleQuotedScalarString

            v = DoubleQuotedScalarString(v)  # as the example configs write addresses
        if isinstance(v, dict):
            inner = CommentedMap(v)
            inner.fa.set_flow_style()
            v = inner
        new[k] = v
    previous = tags[-1] if len(tags) else None
    if isinstance(previous, CommentedMap) and previous.fa.flow_style():
        new.fa.set_flow_style()  # the list is written one tag per line: keep it that way
    tags.append(new)
    if isinstance(previous, CommentedMap):
        _move_trailing_comment(previous, new)
    text = dump(y, data)
    validate_text(text, str(path))
    return text


def remove_tags(path: Path, names: list[str]) -> str:
    y, data, _ = load(path)
    tags = _tags_seq(data)
    present = [t.get("name") for t in tags if isinstance(t, dict)]
    unknown = [n for n in names if n not in present]
    if unknown:
        raise ConfigError([f"{path}: no tag named {n!r}" for n in unknown])
    for name in names:
        i = next(i for i, t in enumerate(tags) if isinstance(t, dict) and t.get("name") == name)
        if i == len(tags) - 1 and i > 0:
            _move_trailing_comment(tags[i], tags[i - 1])
        del tags[i]
    text = dump(y, data)
    validate_text(text, str(path))
    return text


def tag_rows(cfg: Config, device: str | None = None) -> list[dict[str, Any]]:
    return [{"name": t.name, "device": t.device, "address": t.address, "type": t.type, "unit": t.unit,
             "scale": t.scale.model_dump() if t.scale else None, "description": t.description}
            for t in cfg.tags if device is None or t.device == device]


# ---------------------------------------------------------------- live reads


async def read_tags(cfg: Config, names: list[str]) -> list[dict[str, Any]]:
    """Connect to each device that owns one of `names` (all tags when empty), read once, close."""
    from drivers import build_driver
    from edge_agent.model import rfc3339

    wanted = [t for t in cfg.tags if not names or t.name in names]
    by_device: dict[str, list] = {}
    for t in wanted:
        by_device.setdefault(t.device, []).append(t)

    async def one(device_name: str, tags: list) -> list[dict[str, Any]]:
        device = cfg.device(device_name)
        driver = build_driver(cfg, device, tags)
        rows = []
        try:
            async with asyncio.timeout(device.timeout * 3 + 5):
                await driver.connect()
                try:
                    samples = await driver.read()
                finally:
                    await driver.close()
        except Exception as e:  # noqa: BLE001 -- a technician's view: every failure becomes a row, not a traceback
            error = str(e) or type(e).__name__
            return [{"name": t.name, "device": device_name, "value": None, "type": t.type, "quality": "bad",
                     "read_at": None, "error": f"cannot read {device_name}: {error}"} for t in tags]
        types = {t.name: t.type for t in tags}
        for s in samples:
            rows.append({"name": s.tag, "device": device_name, "value": s.value, "type": types.get(s.tag),
                         "quality": str(s.quality), "read_at": rfc3339(s.ts), "error": s.error})
        return rows

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(d, tags), name=f"read:{d}") for d, tags in by_device.items()]
    order = {t.name: i for i, t in enumerate(wanted)}
    rows = [r for t in tasks for r in t.result()]
    return sorted(rows, key=lambda r: order.get(r["name"], len(order)))
