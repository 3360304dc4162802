"""The one atomic writer for every file dinokit produces.

Each output is written to a temporary file in the destination's own folder (so the rename never
crosses a filesystem), flushed and fsync'd, then moved into place with `os.replace`: a reader sees
the old file or the new one, never half of one, and a crash mid-write leaves the previous file
intact. The temporary name is unique per call (`tempfile.mkstemp`), so two processes writing the
same output never share a temp file. JSON never contains NaN or infinities (they become null).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask: read from /proc where it can be (setting it to read it, the portable way,
    briefly changes it for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit it replaces `path`, on an error it is
    removed and `path` is untouched. For writers that want a file name (savefig, torch.save,
    pandas, a video muxer). The temp name keeps `path`'s suffix so format sniffing still works."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file 0600; an output gets the mode a plain open() would give it
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8",
                fsync: bool = True) -> Iterator[IO[Any]]:
    """`open()` for writing, atomically: `with atomic_open(p) as f: f.write(...)`."""
    if "b" in mode:
        encoding = None
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle
        handle.flush()


def write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write a text file atomically; returns `path`."""
    with atomic_open(path, "w", fsync=fsync) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write a binary file atomically; returns `path`."""
    with atomic_open(path, "wb", fsync=fsync) as handle:
        handle.write(data)
    return Path(path)


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON has no NaN), numpy and torch
    scalars and arrays made plain, tuples made lists, Paths made strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)  # numpy / torch scalars and arrays
    if callable(tolist):
        return json_safe(tolist())
    return value


def write_json(path: str | Path, payload: Any, *, indent: int | None = 2, fsync: bool = True) -> Path:
    """Write JSON atomically; NaN and infinities become null, so the file is valid JSON."""
    text = json.dumps(json_safe(payload), indent=indent, allow_nan=False)
    return write_text(path, text + "\n", fsync=fsync)


def write_with(path: str | Path, writer: Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """Call `writer(tmp_path)` and move its file into place: `write_with(p, fig.savefig)`."""
    with atomic_path(path, fsync=fsync) as tmp:
        writer(tmp)
    return Path(path)


def refuse_overwriting(outputs: dict[str, str | Path], inputs: Iterable[str | Path]) -> None:
    """DataError when an output path names one of the inputs (the same file after resolving links
    and `..`): `dinokit predict photos/ --out photos` must not replace the user's photos."""
    from dinokit.errors import DataError

    names, inodes = {}, {}
    for item in inputs:
        path = Path(item)
        names[path.resolve()] = path
        with contextlib.suppress(OSError):
            st = path.stat()
            inodes[(st.st_dev, st.st_ino)] = path
    for label, out in outputs.items():
        out = Path(out)
        hit = names.get(out.resolve())
        if hit is None:
            with contextlib.suppress(OSError):
                st = out.stat()
                hit = inodes.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise DataError(f"{label} {out} would overwrite the input {hit}; write the outputs elsewhere")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (after resolving links), existing or not."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
