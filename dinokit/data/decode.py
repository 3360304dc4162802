"""Image decoding that survives scraped datasets, and a fast check of every image before training.

A truncated or slightly damaged JPEG is decoded as far as the file allows (Pillow's
`LOAD_TRUNCATED_IMAGES`, switched on for that one file, never left on) and counted as a warning;
a file that cannot be decoded at all stays an error. `check_images` decodes every
image of a split at reduced size (JPEG DCT scaling, ~1/8 of the work) on threads, and caches the
result per dataset under $DINOKIT_CACHE, so that a bad file stops `dinokit train` before its
first step, not minutes into an epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageFile

from dinokit.files import write_json
from dinokit.errors import DataError

DECODE_THREADS = min(8, (os.cpu_count() or 1) * 2)  # decoding releases the GIL
CHECK_VERSION = 1  # bump when the check's rules change: cached results are redone


class UndecodableImage(DataError):
    """An image file that cannot be decoded at all (or is missing); carries its path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = str(path)


class _LeniencyGate:
    """Strict decodes run side by side; a lenient one runs alone.

    LOAD_TRUNCATED_IMAGES is a Pillow module flag: a strict decode on another thread while it is on
    would pass a truncated file unnoticed (check_data decodes on a thread pool)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._strict = 0  # strict decodes running
        self._lenient = False  # a lenient decode running or waiting for the strict ones to end

    @contextlib.contextmanager
    def strict(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._lenient)
            self._strict += 1
        try:
            yield
        finally:
            with self._cond:
                self._strict -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def lenient(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._lenient)
            self._lenient = True  # new strict decodes wait from here on
            self._cond.wait_for(lambda: self._strict == 0)
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before
            with self._cond:
                self._lenient = False
                self._cond.notify_all()


_GATE = _LeniencyGate()


def decode_image(path: str | Path, draft: bool = False) -> tuple[Image.Image, bool]:
    """(RGB image, truncated?) of a file; UndecodableImage when nothing can be decoded.

    `draft`: decode a JPEG at about 1/8 size (for checking, not for training)."""
    try:
        with _GATE.strict():
            return _decode(path, draft), False
    except FileNotFoundError:
        raise UndecodableImage(path, "file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        first_error = str(exc) or type(exc).__name__
    try:
        with _GATE.lenient():
            return _decode(path, draft), True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise UndecodableImage(path, first_error) from None


def _decode(path: str | Path, draft: bool) -> Image.Image:
    with Image.open(path) as im:
        if draft and im.format == "JPEG":
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()  # decode now, so that a damaged file fails here
        return im.convert("RGB")  # greyscale, CMYK, RGBA, palette -> RGB


def check_images(paths: list[str], cache: Path | None = None) -> dict[str, dict[str, str]]:
    """{"truncated": {path: reason}, "bad": {path: reason}} for `paths`, cached in `cache` (a folder)
    under a key of the paths, sizes and modification times."""
    key = _fingerprint(paths)
    cached = cache / f"{key}.json" if cache is not None else None
    if cached is not None and cached.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(cached.read_text())
    result: dict[str, dict[str, str]] = {"truncated": {}, "bad": {}}

    def one(path: str) -> tuple[str, str | None, str | None]:
        try:
            _, truncated = decode_image(path, draft=True)
        except UndecodableImage as exc:
            return path, "bad", str(exc)
        return path, ("truncated" if truncated else None), "decoded as far as the file allows"

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        checked = list(pool.map(one, paths))
    for path, kind, reason in checked:
        if kind is not None:
            result[kind][path] = reason or ""
    if cached is not None:
        with contextlib.suppress(OSError):  # a cache: losing it costs a re-check, not data
            write_json(cached, result, indent=None, fsync=False)
    return result


def _fingerprint(paths: list[str]) -> str:
    digest = hashlib.sha1(f"{CHECK_VERSION}".encode())
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"|{path}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"|{path}:missing".encode())
    return digest.hexdigest()[:16]
