"""Thumbnails of the review page: upright, twice the shown size, RAW through the preview, kept by content."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from clip_cull.review.thumbs import SIZES, ThumbnailCache
from test_raw_quality import make_dng
from helpers import make_photo


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_thumbnail_is_upright_and_twice_the_css_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    photo = make_photo(tmp_path / "big.jpg", seed=1, size=(1000, 600), exif=exif)
    cache = ThumbnailCache(tmp_path / "thumbs")
    thumb = Image.open(io.BytesIO(cache.get(str(photo), sha256(photo), "thumb")))
    assert SIZES["thumb"] == 400 and thumb.size == (240, 400)  # 200 CSS px on a 2x screen; upright
    full = Image.open(io.BytesIO(cache.get(str(photo), sha256(photo), "full")))
    assert full.size == (600, 1000)  # every pixel, for the 100% loupe
    # the stored top row becomes the right-hand column once upright (orientation 6)
    stored = np.asarray(Image.open(photo).convert("RGB"), np.float64)
    shown = np.asarray(full.convert("RGB"), np.float64)
    assert np.abs(shown[:, -1, :].mean(0) - stored[0, :, :].mean(0)).max() < 6


def test_thumbnails_are_kept_by_content_hash_and_reused(tmp_path):
    photo = make_photo(tmp_path / "a.jpg", seed=2, size=(300, 200))
    fingerprint = sha256(photo)
    cache = ThumbnailCache(tmp_path / "thumbs")
    first = cache.get(str(photo), fingerprint, "preview")
    stored = tmp_path / "thumbs" / fingerprint[:2] / f"{fingerprint}-preview.jpg"
    assert stored.read_bytes() == first
    renamed = photo.rename(tmp_path / "renamed.jpg")  # same content under another name: no new image made
    mtime = stored.stat().st_mtime_ns
    assert cache.get(str(renamed), fingerprint, "preview") == first and stored.stat().st_mtime_ns == mtime


def test_raw_thumbnail_comes_from_the_embedded_preview(tmp_path):
    raw = make_dng(tmp_path / "a.dng", preview_size=(384, 256), preview_colour=(200, 30, 30), orientation=6)
    thumb = Image.open(io.BytesIO(ThumbnailCache(tmp_path / "thumbs").get(str(raw), sha256(raw), "thumb")))
    assert thumb.size == (256, 384)  # the 384x256 preview, upright by the RAW's orientation
    r, g, b = np.asarray(thumb.convert("RGB"), np.float64).reshape(-1, 3).mean(0)
    assert abs(r - 200) < 8 and g < 45 and b < 45


def test_a_photo_swapped_for_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    import os
    import signal

    from clip_cull.core.files import NotRegularFile

    photo = make_photo(tmp_path / "a.jpg", seed=3)
    fingerprint = sha256(photo)
    photo.unlink()
    os.mkfifo(photo)  # nobody ever writes to it: an open() without O_NONBLOCK would wait forever

    def expire(*_):
        raise TimeoutError("the thumbnail waited on a FIFO")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    try:
        with pytest.raises(NotRegularFile):
            ThumbnailCache(tmp_path / "thumbs").get(str(photo), fingerprint, "thumb")
        cached = tmp_path / "thumbs" / fingerprint[:2] / f"{fingerprint}-preview.jpg"
        cached.parent.mkdir(parents=True)
        os.mkfifo(cached)  # nor is a FIFO in the thumbnail cache read: the image is made again
        make_photo(tmp_path / "b.jpg", seed=3)
        data = ThumbnailCache(tmp_path / "thumbs").get(str(tmp_path / "b.jpg"), fingerprint, "preview")
        assert Image.open(io.BytesIO(data)).size == (96, 64)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_photo_changed_since_shown_is_refused_and_never_cached_under_its_old_hash(tmp_path):
    from clip_cull.review.thumbs import PhotoChanged

    photo = make_photo(tmp_path / "a.jpg", seed=4)
    ranked_as = sha256(photo)
    make_photo(photo, seed=5)  # edited in another program while the review runs
    with pytest.raises(PhotoChanged, match="^changed on disk since it was shown$"):
        ThumbnailCache(tmp_path / "thumbs").get(str(photo), ranked_as, "thumb")
    assert not (tmp_path / "thumbs" / ranked_as[:2] / f"{ranked_as}-thumb.jpg").exists()
    # the new content under its own hash is shown
    assert ThumbnailCache(tmp_path / "thumbs").get(str(photo), sha256(photo), "thumb")[:2] == b"\xff\xd8"


def test_the_cache_serves_only_jpegs_it_wrote_and_a_broken_cache_costs_speed_not_the_page(tmp_path):
    import os

    photo = make_photo(tmp_path / "a.jpg", seed=6)
    fingerprint = sha256(photo)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    entry = tmp_path / "thumbs" / fingerprint[:2] / f"{fingerprint}-thumb.jpg"
    entry.parent.mkdir(parents=True)
    os.symlink(secret, entry)  # a link planted in the cache is never followed
    data = ThumbnailCache(tmp_path / "thumbs").get(str(photo), fingerprint, "thumb")
    assert Image.open(io.BytesIO(data)).size == (96, 64)
    assert secret.read_text() == "root:x:0:0" and not entry.is_symlink() and entry.read_bytes() == data
    entry.write_bytes(b"not a jpeg")  # a damaged entry is made again
    assert ThumbnailCache(tmp_path / "thumbs").get(str(photo), fingerprint, "thumb") == data
    blocked = tmp_path / "a-file"
    blocked.write_text("x")  # the cache folder cannot be made: images are still shown
    assert ThumbnailCache(blocked).get(str(photo), fingerprint, "thumb") == data


def test_at_most_max_renders_photos_are_decoded_at_once(tmp_path, monkeypatch):
    import threading
    import time

    from clip_cull.review import thumbs

    photos = [make_photo(tmp_path / f"p{i}.jpg", seed=40 + i) for i in range(8)]
    running, most = [0], [0]
    count = threading.Lock()
    real = thumbs.render_bytes

    def slow_render(*args):
        with count:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with count:
            running[0] -= 1
        return real(*args)

    monkeypatch.setattr(thumbs, "render_bytes", slow_render)
    cache = ThumbnailCache(tmp_path / "thumbs", max_renders=2)
    workers = [threading.Thread(target=cache.get, args=(str(p), sha256(p), "preview")) for p in photos]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert most[0] == 2 and len(list((tmp_path / "thumbs").rglob("*-preview.jpg"))) == 8


def test_a_photo_replaced_under_its_name_gets_its_own_images_and_the_old_ones_stay_its_predecessors(tmp_path):
    """Cached by content, not path: the same name with new content is a new entry, and the
    earlier content's images are never overwritten with (or served for) the new one."""
    photo = make_photo(tmp_path / "IMG_0003.jpg", seed=7, size=(96, 64))
    cache = ThumbnailCache(tmp_path / "thumbs")
    before = sha256(photo)
    old = cache.get(str(photo), before, "preview")
    make_photo(photo, seed=8, size=(120, 80))  # another photo under the same name
    after = sha256(photo)
    new = cache.get(str(photo), after, "preview")
    assert Image.open(io.BytesIO(old)).size == (96, 64) and Image.open(io.BytesIO(new)).size == (120, 80)
    assert cache.path_for(before, "preview").read_bytes() == old  # still the earlier photo's
    assert cache.path_for(after, "preview").read_bytes() == new
