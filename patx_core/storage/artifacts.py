"""Atomic artifact writes, on local disk or any fsspec URL.

A user's last good checkpoint, report or champion must survive a crash or a kill
mid-write, so every artifact goes to a unique temp file in the *same* directory
(same filesystem, so the rename is atomic) and is renamed over the target only
once fully written and fsynced. Two runs writing at once never share a temp path.
Object stores (``s3://``, ``gs://``, ``memory://``…) publish a PUT whole, so
there the payload is written in one call.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from upath import UPath

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def as_path(path: PathLike) -> Path:
    """A pathlib-compatible path; URLs (``s3://…``) become fsspec-backed ``UPath``s."""
    # universal_pathlib >= 0.3 no longer subclasses pathlib.Path: accept both as they are.
    if isinstance(path, (Path, UPath)):
        return path
    text = os.fspath(path)
    return UPath(text) if "://" in text else Path(text)


def is_local(path: PathLike) -> bool:
    p = as_path(path)
    return not isinstance(p, UPath) or getattr(p, "protocol", "") in ("", "file", "local")


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    target = as_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not is_local(target):
        target.write_bytes(data)
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=os.fspath(target.parent))
    try:
        # mkstemp creates 0600 whatever the umask; a plain open() would give 0666 & ~umask, which
        # lets another user or a serving process read reports, checkpoints and signals.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.fspath(target))
    except BaseException:
        # KeyboardInterrupt included: never leave temp files behind a clean failure.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it, which races with threads creating files, so
    Linux's ``/proc/self/status`` is read first.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself; not supported on every platform/filesystem.
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_write_with(path: PathLike, write: Callable[[io.BytesIO], None]) -> Path:
    """Serialize through ``write(buffer)`` (torch.save, np.save, df.write_parquet…), then publish."""
    buf = io.BytesIO()
    write(buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    return atomic_write_bytes(dst, as_path(src).read_bytes())


def sha256_file(path: PathLike) -> str:
    """Hex digest of a file's bytes: ties a manifest to the exact checkpoint it describes."""
    return hashlib.sha256(as_path(path).read_bytes()).hexdigest()


def read_json(path: PathLike) -> Any:
    return json.loads(as_path(path).read_text(encoding="utf-8"))


def read_parquet(path: PathLike) -> tuple["pl.DataFrame", dict[str, str]]:
    """A parquet file's frame and its key-value metadata, on local disk or any fsspec URL.

    polars opens local paths and the cloud schemes it knows itself, not ``memory://`` or
    other fsspec filesystems: the bytes are read once through the path and parsed from memory.
    """
    import polars as pl

    p = as_path(path)
    source: Any = os.fspath(p) if is_local(p) else io.BytesIO(p.read_bytes())
    frame = pl.read_parquet(source)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return frame, pl.read_parquet_metadata(source)
