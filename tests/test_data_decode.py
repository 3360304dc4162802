"""Truncated and undecodable images: decoded as far as possible (a warning) or an error found
before the first training step; an error after the first step leaves a last.pt to resume from."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import dinokit
from dinokit.data.check import TRUNCATED_IMAGE, UNREADABLE_IMAGE, check_data
from dinokit.data.coco import DetectionDataset
from dinokit.data.formats import voc_to_coco
from dinokit.data.decode import UndecodableImage, check_images, decode_image
from dinokit.errors import DataError
from dinokit.interop.load import load_checkpoint
from tests.test_api import FAST

XML = ("<annotation><filename>{name}</filename><size><width>64</width><height>48</height></size>"
       "<object><name>{cls}</name><bndbox><xmin>8</xmin><ymin>8</ymin><xmax>40</xmax><ymax>36</ymax>"
       "</bndbox></object></annotation>")


def jpeg_bytes(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_voc(root: Path, n: int = 6, truncated: tuple[int, ...] = (), garbage: tuple[int, ...] = ()) -> Path:
    for k in range(n):
        data = jpeg_bytes(k)
        if k in truncated:
            data = data[: len(data) * 2 // 3]  # the last third of the scan is gone
        if k in garbage:
            data = b"this is not an image at all" * 10
        (root / "img").mkdir(parents=True, exist_ok=True)
        (root / "img" / f"p{k}.jpg").write_bytes(data)
        (root / "xml").mkdir(exist_ok=True)
        (root / "xml" / f"p{k}.xml").write_text(XML.format(name=f"p{k}.jpg", cls="ab"[k % 2]))
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def test_truncated_jpeg_decodes_as_far_as_possible(tmp_path):
    path = tmp_path / "t.jpg"
    path.write_bytes(jpeg_bytes()[:1500])
    with pytest.raises(OSError):  # Pillow's default: a truncated file is an error
        Image.open(path).load()
    image, truncated = decode_image(path)
    assert truncated and image.size == (64, 48) and image.mode == "RGB"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # scoped to that one decode, not global
    whole = tmp_path / "w.jpg"
    whole.write_bytes(jpeg_bytes())
    assert decode_image(whole)[1] is False
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UndecodableImage, match="bad.jpg"):
        decode_image(tmp_path / "bad.jpg")


def test_threaded_decodes_still_find_truncation(tmp_path):
    """A strict decode beside a lenient one on another thread must not be made lenient by it."""
    from concurrent.futures import ThreadPoolExecutor

    whole = jpeg_bytes()
    paths = []
    for k in range(24):
        paths.append(tmp_path / f"{k}.jpg")
        paths[-1].write_bytes(whole[: len(whole) * 2 // 3])  # every file truncated
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            flags = list(pool.map(lambda path: decode_image(path)[1], paths))
            assert all(flags), f"{flags.count(False)} of {len(flags)} truncated files passed as whole"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_check_images_is_cached(tmp_path):
    paths = []
    for k, data in enumerate([jpeg_bytes(), jpeg_bytes()[:1500], b"junk"]):
        paths.append(str(tmp_path / f"{k}.jpg"))
        Path(paths[-1]).write_bytes(data)
    cache = tmp_path / "cache" / "image-check"
    first = check_images(paths, cache)
    assert set(first["truncated"]) == {paths[1]} and set(first["bad"]) == {paths[2]}
    assert len(list(cache.glob("*.json"))) == 1
    Path(paths[0]).write_bytes(b"junk now")  # a changed file is checked again
    assert set(check_images(paths, cache)["bad"]) == {paths[0], paths[2]}


def test_data_check_counts_truncated_as_a_warning(tmp_path):
    report = check_data(str(make_voc(tmp_path / "voc", truncated=(1,))))
    kinds = {f.kind: f for s in report.splits for f in s.findings.values()}
    assert TRUNCATED_IMAGE in kinds and not kinds[TRUNCATED_IMAGE].fatal and not report.fatal
    report = check_data(str(make_voc(tmp_path / "voc2", garbage=(2,))))
    assert report.fatal and any(f.kind == UNREADABLE_IMAGE for s in report.splits for f in s.findings.values())


def _train(data: Path, out: Path, **fields):
    return dinokit.train(data=str(data), batch_size=2, out=str(out), name="r", overrides=FAST, **fields)


def test_training_warns_on_truncated_and_stops_early_on_undecodable(tmp_path, capsys):
    run = _train(make_voc(tmp_path / "t", truncated=(0, 3)), tmp_path / "runs1", steps=1, progress=True)
    assert run.steps == 1
    assert "2 truncated image(s) decoded as far as the file allows" in capsys.readouterr().out
    bad = make_voc(tmp_path / "b")
    train_file = voc_to_coco(bad, "train")["images"][0]["file_name"]  # a training image goes bad
    (bad / train_file).write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match=r"1 image\(s\) cannot be decoded .*--skip-bad-images"):
        _train(bad, tmp_path / "runs2", steps=1)
    assert not (tmp_path / "runs2" / "train" / "r" / "last.pt").exists()  # before the first step
    run = _train(bad, tmp_path / "runs3", steps=2, skip_bad_images=True, progress=True)
    assert run.steps == 2 and "1 undecodable image(s) skipped" in capsys.readouterr().out


def test_an_error_after_the_first_step_writes_last_pt(tmp_path, monkeypatch):
    data = make_voc(tmp_path / "v", n=6)
    original = DetectionDataset._item
    calls = {"n": 0}

    def failing(self, i):
        calls["n"] += 1
        if calls["n"] > 3 and self.transforms is not None and len(self) > 1:  # the train split, after step 1
            raise DataError("the disk went away")
        return original(self, i)

    monkeypatch.setattr(DetectionDataset, "_item", failing)
    with pytest.raises(DataError, match=r"the disk went away \(saved .*last.pt at step 1: continue with"):
        _train(data, tmp_path / "runs", steps=3)
    last = tmp_path / "runs" / "train" / "r" / "last.pt"
    assert last.is_file() and load_checkpoint(last)["step"] == 1
    monkeypatch.setattr(DetectionDataset, "_item", original)
    run = _train(data, tmp_path / "runs", steps=3, resume=True)
    assert run.steps == 3
