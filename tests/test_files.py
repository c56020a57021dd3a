"""Finding photos: what is walked, what is skipped, and file identity."""

import hashlib
import os

import pytest

from clip_cull.core.errors import InputError
from clip_cull.core.files import content_fingerprint, walk_photos
from helpers import make_photo


def names(result, root):
    return sorted(os.path.relpath(p.path, root) for p in result.photos)


def test_walk_finds_photos_recursively_and_skips_hidden_rejects_and_other_files(tmp_path):
    for rel in ["a.jpg", "b.JPEG", "sub/c.png", "sub/deep/d.webp", "e.tif", "f.bmp", "g.gif"]:
        make_photo(tmp_path / rel, 1, fmt={"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP",
                                             "tif": "TIFF", "bmp": "BMP", "gif": "GIF"}[rel.rsplit(".", 1)[1].lower()])
    for rel in [".hidden.jpg", "._a.jpg", ".thumbs/x.jpg", "_rejects/r.jpg", "notes.txt", "raw.xmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    result = walk_photos([tmp_path])
    assert names(result, tmp_path) == ["a.jpg", "b.JPEG", "e.tif", "f.bmp", "g.gif", "sub/c.png", "sub/deep/d.webp"]
    assert result.errors == [] and result.unsupported == []


def test_heic_without_plugin_is_unsupported_not_an_error(tmp_path):
    (tmp_path / "IMG_1.HEIC").write_bytes(b"....")
    result = walk_photos([tmp_path], heif=False)
    assert result.photos == [] and result.errors == []
    assert result.unsupported == [str(tmp_path / "IMG_1.HEIC")]


def test_symlink_loop_and_dangling_link_do_not_hang_or_crash(tmp_path):
    make_photo(tmp_path / "a.jpg", 1)
    os.symlink(tmp_path, tmp_path / "loop")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    result = walk_photos([tmp_path])
    assert names(result, tmp_path) == ["a.jpg"]
    assert [(os.path.basename(p), "cannot read file" in r) for p, r in result.errors] == [("dangling.jpg", True)]


def test_single_files_and_overlapping_roots_are_listed_once(tmp_path):
    make_photo(tmp_path / "a.jpg", 1)
    result = walk_photos([tmp_path, tmp_path / "a.jpg"])
    assert [p.path for p in result.photos] == [str(tmp_path / "a.jpg")]


def test_missing_root_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        walk_photos([tmp_path / "nope"])


def test_stat_identity_and_fingerprint(tmp_path):
    path = make_photo(tmp_path / "a.jpg", 1)
    (photo,) = walk_photos([path]).photos
    st = os.stat(path)
    assert (photo.size, photo.mtime_ns) == (st.st_size, st.st_mtime_ns)
    data = path.read_bytes()
    assert content_fingerprint(data) == hashlib.sha256(data).hexdigest()
