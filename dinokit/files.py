"""The one atomic writer for every file dinokit produces, and the guard that keeps it off the
files a command reads.

Each output is written to a temporary file in the destination's own folder (so the rename never
crosses a filesystem), flushed and fsync'd, then moved into place with `os.replace`: a reader sees
the old file or the new one, never half of one, and a crash mid-write leaves the previous file
intact. The temporary name is unique per call (`tempfile.mkstemp`), so two processes writing the
same output never share a temp file. JSON never contains NaN or infinities (they become null).

The guard: every command declares the files it reads (its inputs: a checkpoint, images, a
dataset's annotation files, a study file), and `atomic_path`, which every writer goes through,
refuses to replace any of them: same path, a symlink to it, another spelling of it (`..`), or a
hard link to it (the same device and inode). Outputs known in advance are declared too, so a
clash is refused as soon as both sides are known (before the model loads or a dataset is
evaluated), not after an hour of work. The CLI opens one scope per command (`command_scope`) and
requires the command to declare (`command_inputs`) before its first write, so a new command
cannot forget; the API's entry points (`reading`) and the readers that discover inputs (the
dataset resolver, `load`) add theirs to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

from dinokit.errors import DataError

PathLike = Union[str, Path]


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
    _refuse_input(path)
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


# --------------------------------------------------------------------------- the inputs guard


class UndeclaredInputs(RuntimeError):
    """A CLI command wrote a file before declaring its inputs: a bug in dinokit, not a user error."""


@dataclass
class _Inputs:
    """The files one command reads, and the outputs it has announced."""

    strict: bool = False  # the CLI's scope: a write before `command_inputs` is a bug
    declared: bool = False
    pending: list[Iterable[PathLike]] = field(default_factory=list)  # stat'ed when a check needs them
    inodes: dict[tuple[int, int], Path] = field(default_factory=dict)  # (device, inode) -> input as given
    outputs: dict[Path, str] = field(default_factory=dict)  # announced output -> what it is (a flag)
    seen: set[Any] = field(default_factory=set)  # `once` keys already declared

    def add(self, items: Iterable[PathLike | Iterable[PathLike] | None]) -> None:
        for item in items:
            if item is None:
                continue
            self.pending.append([item] if isinstance(item, (str, Path)) else item)
        for out, what in list(self.outputs.items()):  # an announced output that an input turns out to be
            self.refuse(out, what)

    def input_at(self, target: Path) -> Path | None:
        """The input that `target` is (the same file: path, link or hard link), if any."""
        try:
            st = os.stat(target)  # follows symlinks; a missing target holds nothing to lose
        except OSError:
            return None
        while self.pending:
            for item in self.pending.pop():
                with contextlib.suppress(OSError, ValueError):
                    info = os.stat(item)
                    if stat.S_ISREG(info.st_mode):
                        self.inodes.setdefault((info.st_dev, info.st_ino), Path(item))
        return self.inodes.get((st.st_dev, st.st_ino))

    def refuse(self, target: Path, what: str) -> None:
        hit = self.input_at(target)
        if hit is not None:
            name = f"{what} {target}" if what else str(target)
            raise DataError(f"{name} would overwrite the input {hit}; write the outputs elsewhere")


_SCOPE: contextvars.ContextVar[_Inputs | None] = contextvars.ContextVar("dinokit_inputs", default=None)


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """One command's inputs, for the length of the command (the CLI opens it around each command).
    Inside it, a write before `command_inputs` raises `UndeclaredInputs`."""
    token = _SCOPE.set(_Inputs(strict=True))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def command_inputs(*inputs: PathLike | Iterable[PathLike] | None,
                   outputs: Mapping[str, PathLike | None] | None = None) -> None:
    """A command's own declaration, once at its top: the files it reads (paths, or iterables of
    them, read lazily; None is skipped) and the outputs it will write ({what: path}). An output
    that is an input is refused here, before any work."""
    scope = _SCOPE.get()
    if scope is None:  # the command's function called directly (not through the CLI): check now
        with reading(*inputs, outputs=outputs):
            return
    scope.declared = True
    declare_inputs(*inputs, outputs=outputs)


def declare_inputs(*inputs: PathLike | Iterable[PathLike] | None,
                   outputs: Mapping[str, PathLike | None] | None = None, once: Any = None) -> None:
    """Add inputs (and announced outputs) to the running command's; a no-op outside a scope (see
    `reading`). Readers call it for what they discover: the dataset's annotation files and images
    (`once`: a key that declares the same files only once, e.g. a study's trials resolving one dataset)."""
    scope = _SCOPE.get()
    if scope is None or (once is not None and once in scope.seen):
        return
    if once is not None:
        scope.seen.add(once)
    for what, out in (outputs or {}).items():
        if out is not None:
            scope.outputs.setdefault(Path(out), what)
    scope.add(inputs)


@contextlib.contextmanager
def reading(*inputs: PathLike | Iterable[PathLike] | None,
            outputs: Mapping[str, PathLike | None] | None = None) -> Iterator[None]:
    """The API's entry points: inside the block the writer refuses `inputs`. Inside a command
    they join the command's inputs (and stay declared until it ends); from Python, the block has
    its own scope."""
    if _SCOPE.get() is not None:
        declare_inputs(*inputs, outputs=outputs)
        yield
        return
    token = _SCOPE.set(_Inputs(declared=True))
    try:
        declare_inputs(*inputs, outputs=outputs)
        yield
    finally:
        _SCOPE.reset(token)


def refuse_overwriting(outputs: Mapping[str, PathLike | None], inputs: Iterable[PathLike] = ()) -> None:
    """DataError when one of `outputs` ({what: path}) is one of `inputs` or of the running
    command's inputs: `dinokit predict photos/ --out photos` must not replace the user's photos."""
    with reading(list(inputs), outputs=outputs):
        pass


def _refuse_input(path: Path) -> None:
    """The writer's check: `path` may not be an input of the running command."""
    scope = _SCOPE.get()
    if scope is None:
        return
    if scope.strict and not scope.declared:
        raise UndeclaredInputs(f"this command writes {path} before declaring its inputs: call "
                               "dinokit.files.command_inputs(...) at the top of the command")
    scope.refuse(path, scope.outputs.get(path, ""))
