"""The embedding cache: hits, misses, changes, renames, failures, models, interruptions."""

import os
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image

from clip_cull.model.encoder import ModelSpec
from clip_cull.core.errors import CacheError
from clip_cull.core.files import walk_photos
from clip_cull.scoring.indexer import IndexOptions, index_photos
from clip_cull.model.session import ModelSession
from clip_cull.model.preprocess import embedding_key
from clip_cull.store.cache import Store, migrations
from helpers import make_photo


@pytest.fixture
def store(private_cache):
    s = Store.open(private_cache)
    yield s
    s.close()


def session_for(tiny_model_files, store, checkpoint=None):
    config, default_checkpoint = tiny_model_files
    return ModelSession(ModelSpec(str(config), str(checkpoint or default_checkpoint)), store, "cpu")


def index(store, session, folder, **options):
    return index_photos(store, walk_photos([folder]).photos, session, IndexOptions(**options))


def test_second_run_embeds_nothing_and_never_loads_the_model(store, tiny_model_files, photo_folder):
    first = index(store, session_for(tiny_model_files, store), photo_folder)
    assert (first.embedded, first.cached, first.reused) == (8, 0, 0)
    warm_session = session_for(tiny_model_files, store)
    second = index(store, warm_session, photo_folder)
    assert (second.embedded, second.cached, second.reused) == (0, 8, 0)
    assert not warm_session.loaded


def test_vectors_are_float16_blobs_of_both_sizes(store, tiny_model_files, photo_folder):
    index(store, session_for(tiny_model_files, store), photo_folder)
    sizes = store.db.execute("select length(projected), length(pooled) from embeddings").fetchall()
    assert set(sizes) == {(16 * 2, 32 * 2)}  # 16-d projected and 32-d pooled, 2 bytes each


def test_changed_photo_is_embedded_again(store, tiny_model_files, photo_folder):
    index(store, session_for(tiny_model_files, store), photo_folder)
    target = photo_folder / "IMG_0002.jpg"
    make_photo(target, seed=99)
    os.utime(target, ns=(1, 1_700_000_000_000_000_000))
    again = index(store, session_for(tiny_model_files, store), photo_folder)
    assert (again.embedded, again.cached) == (1, 7)


def test_renamed_or_copied_photo_reuses_its_embedding(store, tiny_model_files, photo_folder):
    index(store, session_for(tiny_model_files, store), photo_folder)
    os.rename(photo_folder / "IMG_0001.jpg", photo_folder / "day2" / "renamed.jpg")
    shutil.copy2(photo_folder / "IMG_0003.jpg", photo_folder / "copy.jpg")
    session = session_for(tiny_model_files, store)
    again = index(store, session, photo_folder)
    assert (again.embedded, again.reused, again.cached) == (0, 2, 7)
    assert not session.loaded
    rows = store.file_records([str(photo_folder / "day2" / "renamed.jpg")])
    assert rows[str(photo_folder / "day2" / "renamed.jpg")].fingerprint is not None


def test_unreadable_file_is_remembered_until_it_changes(store, tiny_model_files, photo_folder):
    broken = photo_folder / "broken.jpg"
    broken.write_text("not a photo")
    first = index(store, session_for(tiny_model_files, store), photo_folder)
    assert [(os.path.basename(f.path), f.remembered) for f in first.failures] == [("broken.jpg", False)]
    assert str(broken) not in {p.path for p in first.ready}
    second = index(store, session_for(tiny_model_files, store), photo_folder)
    assert [(os.path.basename(f.path), f.remembered) for f in second.failures] == [("broken.jpg", True)]
    assert second.embedded == 0
    make_photo(broken, seed=42)
    third = index(store, session_for(tiny_model_files, store), photo_folder)
    assert (third.failures, third.embedded) == ([], 1)


def test_switching_models_keeps_both_caches(store, tiny_model_files, photo_folder, tmp_path):
    import open_clip

    config, _ = tiny_model_files
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(open_clip.create_model(config.stem, pretrained=None).state_dict(), other)
    a = session_for(tiny_model_files, store)
    b = session_for(tiny_model_files, store, other)
    assert a.model_id != b.model_id
    assert index(store, a, photo_folder).embedded == 8
    assert index(store, b, photo_folder).embedded == 8
    assert index(store, session_for(tiny_model_files, store), photo_folder).cached == 8
    assert store.db.execute("select count(*) from embeddings").fetchone()[0] == 16


def test_interrupted_run_keeps_finished_batches(store, tiny_model_files, photo_folder, monkeypatch):
    from clip_cull.model.encoder import ClipEncoder

    real_encode, batches = ClipEncoder.encode_squares, []

    def ctrl_c_in_the_second_batch(self, squares):
        batches.append(len(squares))
        if len(batches) == 2:  # the first batch was handed to the writer; Ctrl-C while the model runs
            raise KeyboardInterrupt
        return real_encode(self, squares)

    monkeypatch.setattr(ClipEncoder, "encode_squares", ctrl_c_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        index(store, session_for(tiny_model_files, store), photo_folder, batch_size=3)
    monkeypatch.undo()
    assert batches == [3, 3]
    resumed = index(store, session_for(tiny_model_files, store), photo_folder, batch_size=3)
    assert (resumed.cached, resumed.embedded) == (3, 5)


def test_a_batch_is_recorded_whole_or_not_at_all(store, tiny_model_files, photo_folder, monkeypatch):
    """Files, embeddings and focus/exposure figures of a batch go in one transaction: a process
    killed while writing them leaves none of the batch, never an embedded photo without its
    figures (which the next run then took for a renamed copy, and counted wrongly)."""
    def die_while_writing_figures(self, rows):
        raise KeyboardInterrupt  # stands in for SIGKILL between the embeddings and the figures

    monkeypatch.setattr(Store, "_insert_measurements", die_while_writing_figures)
    with pytest.raises(KeyboardInterrupt):
        index(store, session_for(tiny_model_files, store), photo_folder, batch_size=3)
    conn = store.db.conn
    assert conn.execute("select count(*) from embeddings").fetchone()[0] == 0
    assert conn.execute("select count(*) from files where fingerprint is not null").fetchone()[0] == 0
    monkeypatch.undo()
    resumed = index(store, session_for(tiny_model_files, store), photo_folder, batch_size=3)
    assert (resumed.cached, resumed.embedded) == (0, 8)


def test_exif_facts_are_stored(store, tiny_model_files, tmp_path):
    exif = Image.Exif()
    exif[0x0110] = "X-T5"
    exif[0x010F] = "FUJIFILM"
    exif[0x0112] = 6
    exif[0x8769] = {0x9003: "2026:05:01 09:00:00"}  # the Exif IFD; assigning into get_ifd() is lost before Pillow 11.1
    path = make_photo(tmp_path / "f" / "DSCF0001.jpg", 3, exif=exif.tobytes())
    index(store, session_for(tiny_model_files, store), path.parent)
    rec = store.file_records([str(path)])[str(path)]
    assert (rec.width, rec.height, rec.orientation) == (96, 64, 6)
    assert (rec.captured_at, rec.camera) == ("2026-05-01T09:00:00", "FUJIFILM X-T5")


def test_cache_uses_wal_and_records_its_migrations(private_cache):
    Store.open(private_cache).close()
    conn = sqlite3.connect(private_cache)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in conn.execute("select name from _sqlite_migrations where migration_set='clipcull'")]
    assert names == [m.name for m in migrations._migrations]
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"files", "embeddings", "text_embeddings", "settings", "checkpoints"} <= tables


def test_cache_from_a_newer_version_is_refused(private_cache):
    Store.open(private_cache).close()
    conn = sqlite3.connect(private_cache)
    conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) values ('clipcull', 'm999_future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(CacheError, match="newer clipcull"):
        Store.open(private_cache)


def test_a_damaged_cache_is_moved_aside_whole_and_built_anew(private_cache):
    private_cache.parent.mkdir(parents=True, exist_ok=True)
    private_cache.write_bytes(b"this is not sqlite" * 100)
    before = private_cache.read_bytes()
    store = Store.open(private_cache)
    assert store.rebuilt_from.name.startswith("clipcull.db.damaged-") and store.damage == "file is not a database"
    assert store.rebuilt_from.read_bytes() == before  # renamed, never deleted or changed
    assert store.file_records(["/a.jpg"]) == {}  # a new, empty cache in its place
    store.close()
    assert Store.open(private_cache).rebuilt_from is None


def test_a_damaged_cache_is_left_alone_when_not_to_be_rebuilt_or_not_named_like_a_database(private_cache, tmp_path):
    for path, rebuild, says in ((private_cache, False, "is damaged"),
                                (tmp_path / "photos" / "IMG_0001.jpg", True, "is not a clipcull cache")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(CacheError, match=says):
            Store.open(path, rebuild=rebuild)
        assert path.read_bytes() == b"this is not sqlite" * 100
        assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_prompt_embeddings_are_cached_per_model(store, tiny_model_files):
    from clip_cull.scoring.indexer import prompt_embeddings

    prompts = ["a outstanding picture, of a #tench", "a horrible picture, of a #tench"]
    first = prompt_embeddings(store, session_for(tiny_model_files, store), prompts)
    warm = session_for(tiny_model_files, store)
    second = prompt_embeddings(store, warm, prompts)
    assert not warm.loaded
    for p in prompts:
        np.testing.assert_array_equal(first[p], second[p])


def test_int8_precision_is_cached_apart_and_shares_prompts(store, tiny_model_files, photo_folder):
    from clip_cull.scoring.indexer import prompt_embeddings

    config, checkpoint = tiny_model_files
    fp32 = ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu")
    int8 = ModelSession(ModelSpec(str(config), str(checkpoint), "int8"), store, "cpu")
    assert int8.model_id == fp32.model_id + "+int8" and int8.text_model_id == fp32.model_id
    assert index(store, fp32, photo_folder).embedded == 8
    assert index(store, int8, photo_folder).embedded == 8
    prompts = ["a outstanding picture, of a #tench"]
    prompt_embeddings(store, fp32, prompts)
    warm = ModelSession(ModelSpec(str(config), str(checkpoint), "int8"), store, "cpu")
    prompt_embeddings(store, warm, prompts)
    assert not warm.loaded  # prompts are shared across precisions
    fps = [r[0] for r in store.db.execute("select distinct fingerprint from embeddings")]
    a = store.embeddings(fps, fp32.model_id)
    b = store.embeddings(fps, int8.model_id)
    for fp in fps:
        x, y = a[fp].astype(np.float64), b[fp].astype(np.float64)
        assert x @ y / np.linalg.norm(x) / np.linalg.norm(y) > 0.99


def test_unknown_precision_is_refused(tiny_model_files):
    from clip_cull.model.encoder import load_encoder
    from clip_cull.core.errors import ModelLoadError

    config, checkpoint = tiny_model_files
    with pytest.raises(ModelLoadError, match="unknown precision 'fp8'"):
        load_encoder(ModelSpec(str(config), str(checkpoint), "fp8"), "cpu")


def test_photos_are_decoded_while_the_model_loads_with_the_same_embeddings(store, tiny_model_files, photo_folder, monkeypatch):
    """The model takes seconds to load: decoding must not wait for it, and must not change
    what the model is given."""
    import threading

    import clip_cull.scoring.prepare as worker
    from clip_cull.model.encoder import load_encoder

    reference = index(store, session_for(tiny_model_files, store), photo_folder)
    expected = store.embeddings([r.fingerprint for r in store.file_records([p.path for p in reference.ready]).values()],
                                session_for(tiny_model_files, store).model_id)

    decoded = []
    three_decoded = threading.Event()
    real_decode = worker.decode_photo

    def counting_decode(*args, **kwargs):
        result = real_decode(*args, **kwargs)
        decoded.append(1)
        if len(decoded) >= 3:
            three_decoded.set()
        return result

    monkeypatch.setattr(worker, "decode_photo", counting_decode)
    config, checkpoint = tiny_model_files
    spec = ModelSpec(str(config), str(checkpoint))

    def slow_load():
        # Loading finishes only once photos have been decoded meanwhile.
        assert three_decoded.wait(timeout=20), "decoding waited for the model"
        return load_encoder(spec, "cpu")

    other = Store.open(store.path.replace("clipcull.db", "other.db"))
    session = ModelSession(spec, other, "cpu", loader=slow_load, model_id=session_for(tiny_model_files, store).model_id)
    report = index_photos(other, walk_photos([photo_folder]).photos, session, IndexOptions(workers=2))
    assert report.embedded == 8 and not report.failures
    got = other.embeddings(list(expected), session.model_id)
    for fingerprint, vector in expected.items():
        np.testing.assert_array_equal(got[fingerprint], vector)
    other.close()


def test_exact_path_embeds_what_open_clip_would(store, tiny_model_files, tmp_path):
    """AVA evaluation's exact path: the full decode and open_clip's own transform, so that
    the paper's numbers stay comparable; the fast path agrees closely."""
    from clip_cull.model.encoder import load_encoder

    photo = make_photo(tmp_path / "photos" / "wide.jpg", seed=5, size=(300, 170))
    config, checkpoint = tiny_model_files
    encoder = load_encoder(ModelSpec(str(config), str(checkpoint)), "cpu")
    with Image.open(photo) as img:
        expected, _ = encoder.encode_images(encoder.preprocess(img.convert("RGB")).unsqueeze(0))
    exact_store = Store.open(tmp_path / "exact.db")
    session = session_for(tiny_model_files, exact_store)
    report = index(exact_store, session, tmp_path / "photos", fast_decode=False)
    fingerprint = exact_store.file_records([str(photo)])[str(photo)].fingerprint
    got = exact_store.embeddings([fingerprint], session.model_id + "|exact")[fingerprint]  # keyed by preprocessing
    assert report.embedded == 1
    np.testing.assert_allclose(got, expected[0], atol=2e-3)  # float16 in the cache
    fast = index(store, session_for(tiny_model_files, store), tmp_path / "photos")
    assert fast.embedded == 1
    fast_vector = store.embeddings([fingerprint], session.model_id)[fingerprint].astype(np.float32)
    assert np.dot(fast_vector, got) / (np.linalg.norm(fast_vector) * np.linalg.norm(got)) > 0.99
    exact_store.close()


def test_measurements_are_kept_per_analyser_version_and_redone_when_it_changes(store):
    store.save_measurements([("fp-a", "faces", 1, {"faces": [{"eyes": [0.3, 0.31]}]}),
                             ("fp-b", "faces", 1, {"faces": []}),
                             ("fp-a", "quality", 2, {"focus": 12.5})])
    assert store.fingerprints_measured("faces", 1) == {"fp-a", "fp-b"}
    assert store.fingerprints_measured("faces", 2) == set()  # a new version measures everything again
    assert store.measurements(["fp-a", "fp-b", "fp-c"], "faces", 1) == {
        "fp-a": {"faces": [{"eyes": [0.3, 0.31]}]}, "fp-b": {"faces": []}}
    store.save_measurements([("fp-a", "faces", 2, {"faces": []})])  # the new version replaces the old
    assert store.measurements(["fp-a"], "faces", 1) == {}
    assert store.measurements(["fp-a"], "faces", 2) == {"fp-a": {"faces": []}}
    assert store.measurements(["fp-a"], "quality", 2) == {"fp-a": {"focus": 12.5}}


def test_analysers_register_by_name_and_report_a_missing_extra(monkeypatch):
    from clip_cull.core import analysers

    monkeypatch.setattr(analysers, "_REGISTRY", {})  # the registry is process-wide: leave it as it was

    probe = analysers.register(analysers.Analyser("probe-test", 1, lambda rgb: {"mean": float(rgb.mean())},
                                                  requires=("no_such_module_for_clipcull",)))
    assert analysers.get("probe-test") is probe
    assert not probe.available()
    assert analysers.Analyser("plain", 1, lambda rgb: {}).available()
    with pytest.raises(KeyError, match="no analyser named 'nope'"):
        analysers.get("nope")
    plain = analysers.register(analysers.Analyser("plain", 1, lambda rgb: {}))
    assert analysers.available() == [plain]  # what the pipeline benchmark runs: not the one missing its extra


def test_the_quality_checks_are_a_built_in_analyser():
    from clip_cull.core import analysers
    from clip_cull.core.quality import ANALYSER

    assert analysers.get("quality") is ANALYSER and ANALYSER in analysers.available()


def test_analysers_run_once_per_content_and_again_only_when_their_version_changes(store, tiny_model_files,
                                                                                  photo_folder, monkeypatch):
    from clip_cull.core import analysers

    calls = []

    def mean_colour(rgb):
        calls.append(rgb.shape)
        return {"mean": rgb.reshape(-1, 3).mean(axis=0).tolist()}

    monkeypatch.setattr(analysers, "_REGISTRY", {})
    analysers.register(analysers.Analyser("mean-colour", 1, mean_colour, work_side=64))
    session = session_for(tiny_model_files, store)
    first = index(store, session, photo_folder, analysers=("mean-colour",))
    photos = walk_photos([photo_folder]).photos
    assert first.embedded == len(photos) and len(calls) == len(photos)
    assert all(max(shape[:2]) == 64 and shape[2] == 3 for shape in calls)
    fps = [r.fingerprint for r in store.file_records([p.path for p in photos]).values()]
    results = store.measurements(fps, "mean-colour", 1)
    for photo in photos:  # the mean of the photo scaled to 64 px, computed here with Pillow and numpy
        fp = store.file_records([photo.path])[photo.path].fingerprint
        with Image.open(photo.path) as im:
            im = im.convert("RGB")
            small = im.resize((64, round(im.height * 64 / im.width)) if im.width >= im.height
                              else (round(im.width * 64 / im.height), 64), Image.BILINEAR)
        np.testing.assert_allclose(results[fp]["mean"], np.asarray(small).reshape(-1, 3).mean(axis=0), atol=3)

    calls.clear()
    again = index(store, session, photo_folder, analysers=("mean-colour",))
    assert (again.embedded, again.cached, calls) == (0, len(photos), [])

    analysers.register(analysers.Analyser("mean-colour", 2, mean_colour, work_side=64))  # a new version
    redo = index(store, session, photo_folder, analysers=("mean-colour",))
    assert redo.embedded == 0 and len(calls) == len(photos)  # measured again, not embedded again
    assert set(store.measurements(fps, "mean-colour", 2)) == set(fps)


def test_a_failing_analyser_does_not_drop_the_photo(store, tiny_model_files, photo_folder, monkeypatch):
    from clip_cull.core import analysers

    def broken(rgb):
        raise RuntimeError("detector exploded")

    monkeypatch.setattr(analysers, "_REGISTRY", {})
    analysers.register(analysers.Analyser("broken", 1, broken))
    report = index(store, session_for(tiny_model_files, store), photo_folder, analysers=("broken",))
    photos = walk_photos([photo_folder]).photos
    assert not report.failures and len(report.ready) == len(photos)
    fps = [r.fingerprint for r in store.file_records([p.path for p in photos]).values()]
    assert all(v == {"error": "RuntimeError: detector exploded"} for v in store.measurements(fps, "broken", 1).values())


def test_an_analyser_whose_extra_is_missing_is_left_out(store, tiny_model_files, photo_folder, monkeypatch):
    from clip_cull.core import analysers

    monkeypatch.setattr(analysers, "_REGISTRY", {})
    analysers.register(analysers.Analyser("needs-extra", 1, lambda rgb: {}, requires=("no_such_module_for_clipcull",)))
    report = index(store, session_for(tiny_model_files, store), photo_folder, analysers=("needs-extra",))
    assert len(report.ready) == len(walk_photos([photo_folder]).photos)
    assert store.fingerprints_measured("needs-extra", 1) == set()


def test_an_analyser_that_needs_a_finer_decode_changes_neither_embeddings_nor_checks(tiny_model_files, tmp_path,
                                                                                     monkeypatch):
    """The faces analyser needs a larger decode than the model's: a cache made with it installed
    holds the same embeddings and focus/exposure figures as one made without it (a second,
    finer decode serves it), so caches compare whoever made them."""
    from clip_cull.core import analysers

    seen = []

    def big(rgb):
        seen.append(rgb.shape)
        return {}

    monkeypatch.setattr(analysers, "_REGISTRY", dict(analysers._REGISTRY))
    analysers.register(analysers.Analyser("big-test", 1, big, work_side=960))
    folder = tmp_path / "large"
    for i in range(2):
        make_photo(folder / f"IMG_{i}.jpg", seed=i, size=(3000, 2000))
    results = []
    for names in ((), ("big-test",)):
        store = Store.open(tmp_path / f"c{len(names)}.db")
        session = session_for(tiny_model_files, store)
        index(store, session, folder, analysers=names)
        fps = [r.fingerprint for r in store.file_records([str(p) for p in sorted(folder.iterdir())]).values()]
        results.append((store.embeddings(fps, embedding_key(session.model_id, "fast")),
                        store.measurements(fps, "quality", analysers.get("quality").version)))
        store.close()
    (emb_without, quality_without), (emb_with, quality_with) = results
    assert emb_without.keys() == emb_with.keys() and len(emb_with) == 2
    for fp in emb_with:
        np.testing.assert_array_equal(emb_without[fp], emb_with[fp])
    assert quality_without == quality_with and len(quality_with) == 2
    assert [max(shape[:2]) for shape in seen] == [960, 960]  # it did get the finer decode
