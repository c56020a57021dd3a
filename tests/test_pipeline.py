"""The indexing pipeline's workers: threads or processes that import no torch, what they hand
back, a worker process that dies, Ctrl-C, the model's transform checked once it has loaded,
and the focus/exposure figures of older caches carried over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_cull.core.files import walk_photos
from clip_cull.model.encoder import ModelSpec
from clip_cull.model.session import ModelSession
from clip_cull.scoring.indexer import CRASHED, IndexOptions, choose_pool, index_photos
from clip_cull.store.cache import Store
from helpers import noise_pngs, until_embedded
from pipeline_analysers import always_crash, crash_on_grey, mark_and_go_on, where_it_ran

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(private_cache):
    s = Store.open(private_cache)
    yield s
    s.close()


def session_for(tiny_model_files, store, **kwargs):
    config, checkpoint = tiny_model_files
    return ModelSession(ModelSpec(str(config), str(checkpoint)), store, "cpu", **kwargs)


def index(store, session, folder, **options):
    return index_photos(store, walk_photos([folder]).photos, session, IndexOptions(**options))


def fingerprints(store, folder) -> dict[str, str]:
    photos = walk_photos([folder]).photos
    return {Path(p).name: r.fingerprint for p, r in store.file_records([p.path for p in photos]).items()}


@pytest.fixture
def registry(monkeypatch):
    from clip_cull.core import analysers

    monkeypatch.setattr(analysers, "_REGISTRY", {})  # the registry is process-wide: leave it as it was
    return analysers


def test_processes_hand_back_what_threads_do_and_import_no_torch(store, tiny_model_files, photo_folder, tmp_path,
                                                                  registry):
    registry.register(registry.Analyser("where", 1, where_it_ran, work_side=64))
    (photo_folder / "broken.jpg").write_text("not a photo")
    threads = index(store, session_for(tiny_model_files, store), photo_folder, pool="threads", analysers=("where",))
    other = Store.open(tmp_path / "other.db")
    processes = index(other, session_for(tiny_model_files, other), photo_folder, pool="processes", workers=2,
                      analysers=("where",))
    assert (threads.pool, processes.pool) == ("threads", "processes")
    assert (threads.embedded, processes.embedded) == (8, 8)
    assert [(Path(f.path).name, f.reason) for f in processes.failures] == [
        (Path(f.path).name, f.reason) for f in threads.failures] == [("broken.jpg", "not an image (or a format Pillow cannot read)")]
    fps = [fp for name, fp in fingerprints(store, photo_folder).items() if name != "broken.jpg"]
    model_id = session_for(tiny_model_files, store).model_id
    a, b = store.embeddings(fps, model_id), other.embeddings(fps, model_id)
    assert set(a) == set(b) == set(fps)
    for fp in fps:
        np.testing.assert_array_equal(a[fp], b[fp])  # the same uint8 squares, normalised the same way
    assert store.measurements(fps, "quality", 1) == other.measurements(fps, "quality", 1)
    ran_in = other.measurements(fps, "where", 1)
    assert {r["pid"] for r in ran_in.values()} - {os.getpid()} == {r["pid"] for r in ran_in.values()}
    assert not any(r["torch"] for r in ran_in.values())  # this process has torch; the workers never imported it
    assert "torch" in sys.modules
    other.close()


def test_a_worker_process_that_dies_costs_its_photo_one_line_and_the_run_goes_on(store, tiny_model_files,
                                                                                photo_folder, registry):
    registry.register(registry.Analyser("crash", 1, crash_on_grey, work_side=32))
    Image.new("RGB", (96, 64), (128, 128, 128)).save(photo_folder / "grey.jpg", quality=95)
    seen = []
    report = index_photos(store, walk_photos([photo_folder]).photos, session_for(tiny_model_files, store),
                          IndexOptions(pool="processes", workers=2, batch_size=3, analysers=("crash",)),
                          on_failure=seen.append)
    assert [(Path(f.path).name, f.reason, f.remembered) for f in seen] == [("grey.jpg", CRASHED, False)]
    assert report.embedded == 8 and len(report.ready) == 8
    assert store.file_records([str(photo_folder / "grey.jpg")]) == {}  # not remembered: tried again next run


def test_worker_processes_that_cannot_run_here_end_the_run_with_one_message(store, tiny_model_files, photo_folder,
                                                                            registry):
    from clip_cull.core.errors import WorkerError
    from clip_cull.scoring.indexer import CRASHES_TO_GIVE_UP

    registry.register(registry.Analyser("always-crash", 1, always_crash, work_side=32))
    seen = []
    with pytest.raises(WorkerError, match="--pool threads"):
        index_photos(store, walk_photos([photo_folder]).photos, session_for(tiny_model_files, store),
                     IndexOptions(pool="processes", workers=2, analysers=("always-crash",)), on_failure=seen.append)
    assert len(seen) == CRASHES_TO_GIVE_UP - 1  # reported one by one until it is clearly not the photos


def test_the_model_loads_while_worker_processes_decode(store, tiny_model_files, photo_folder, tmp_path, registry):
    import functools

    from clip_cull.model.encoder import load_encoder

    marks = tmp_path / "marks"
    marks.mkdir()
    registry.register(registry.Analyser("mark", 1, functools.partial(mark_and_go_on, str(marks)), work_side=32))
    config, checkpoint = tiny_model_files
    spec = ModelSpec(str(config), str(checkpoint))

    def slow_load():
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(list(marks.iterdir())) >= 5, "the workers waited for the model"
        return load_encoder(spec, "cpu")

    session = ModelSession(spec, store, "cpu", loader=slow_load, model_id=session_for(tiny_model_files, store).model_id)
    report = index(store, session, photo_folder, pool="processes", workers=2, analysers=("mark",))
    assert report.embedded == 8 and not report.failures


@pytest.mark.parametrize("transform", ["bilinear", "squash"])
def test_squares_made_before_the_model_loaded_are_checked_against_its_transform(store, tiny_model_files, photo_folder,
                                                                               transform):
    """Workers start with open_clip's usual transform; a model with another one gets its own:
    squares of another filter are made again, and a transform that is no centre square runs
    in threads. The embeddings are those of the model's transform on each decoded photo."""
    import open_clip

    from clip_cull.core.images import decode_photo
    from clip_cull.model.encoder import load_encoder
    from clip_cull.model.preprocess import CentreSquarePreprocess

    config, checkpoint = tiny_model_files
    spec = ModelSpec(str(config), str(checkpoint))
    kind = {"bilinear": dict(interpolation="bilinear"), "squash": dict(resize_mode="squash")}[transform]

    def other_transform():
        encoder = load_encoder(spec, "cpu")
        encoder.preprocess = open_clip.image_transform(32, is_train=False, **kind)
        encoder._fast = CentreSquarePreprocess.from_transform(encoder.preprocess)
        return encoder

    session = ModelSession(spec, store, "cpu", loader=other_transform, model_id="other-transform")
    report = index(store, session, photo_folder, pool="processes", workers=2, batch_size=3)
    assert report.embedded == 8 and not report.failures
    assert report.pool == ("processes" if transform == "bilinear" else "threads")
    encoder = session.encoder
    got = store.embeddings(list(fingerprints(store, photo_folder).values()), "other-transform")
    for photo in walk_photos([photo_folder]).photos:
        data = Path(photo.path).read_bytes()
        image, _ = decode_photo(data, min_side=32)
        pixels = encoder.preprocess(image).unsqueeze(0)  # open_clip's own transform, torch's way
        expected, _ = encoder.encode_images(pixels)
        fp = store.file_records([photo.path])[photo.path].fingerprint
        np.testing.assert_allclose(got[fp], expected[0], atol=2e-3)  # float16 in the cache


def test_auto_takes_processes_only_where_they_pay_and_can_run(registry):
    from clip_cull.core.quality import ANALYSER as QUALITY

    many, few = 10_000, 20
    assert choose_pool(IndexOptions(workers=16), many, [QUALITY], square=True) == "processes"
    assert choose_pool(IndexOptions(workers=16), few, [QUALITY], square=True) == "threads"
    assert choose_pool(IndexOptions(workers=2), many, [QUALITY], square=True) == "threads"  # measured on 2 cores
    assert choose_pool(IndexOptions(workers=16), many, [QUALITY], square=False) == "threads"  # exact path
    local = registry.Analyser("local", 1, lambda rgb: {})  # a lambda cannot be sent to a process
    assert choose_pool(IndexOptions(workers=16, pool="processes"), many, [local], square=True) == "threads"
    assert choose_pool(IndexOptions(workers=2, pool="processes"), few, [QUALITY], square=True) == "processes"
    with pytest.raises(ValueError, match="unknown pool"):
        IndexOptions(pool="fibers")


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(tiny_model_files, photo_folder, tmp_path):
    """multiprocessing runs the calling script again in each worker it starts: one without
    `if __name__ == "__main__":` would index again in every worker. Workers start without it."""
    config, checkpoint = tiny_model_files
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\n"
        "from clip_cull.core.files import walk_photos\n"
        "from clip_cull.model.encoder import ModelSpec\n"
        "from clip_cull.model.session import ModelSession\n"
        "from clip_cull.scoring.indexer import IndexOptions, index_photos\n"
        "from clip_cull.store.cache import Store\n"
        "print('script ran', flush=True)\n"
        f"store = Store.open({str(tmp_path / 'c.db')!r})\n"
        f"session = ModelSession(ModelSpec({str(config)!r}, {str(checkpoint)!r}), store, 'cpu')\n"
        f"report = index_photos(store, walk_photos([{str(photo_folder)!r}]).photos, session,\n"
        "                       IndexOptions(pool='processes', workers=2))\n"
        "print(report.pool, report.embedded, len(report.failures), flush=True)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["script ran", "processes 8 0"]
    assert "Traceback" not in result.stderr


def descendants(pid: int) -> set[int]:
    """Every process below pid (children, their children ...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_ctrl_c_in_a_terminal_ends_the_run_and_every_worker_process(tiny_env, tmp_path):
    folder = noise_pngs(tmp_path / "many", 300)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "clip_cull", "rank", str(folder), "--batch-size", "4",
                             "--pool", "processes", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    workers: set[int] = set()
    until_embedded(Path(os.environ["CLIPCULL_DB"]), proc, each=lambda: workers.update(descendants(proc.pid)))
    workers |= descendants(proc.pid)
    assert len(workers) >= 2, "no worker processes seen"
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches every process of the group
    _, err = proc.communicate(timeout=60)  # a hang here fails the test
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if alive(p)]


def test_focus_and_exposure_of_an_older_cache_are_kept_not_measured_again(store, tiny_model_files, photo_folder,
                                                                           monkeypatch):
    """Before the analysers, the figures had a table of their own: the cache's step m007 moves
    them into the analysers' measurements, so a user's photos are not decoded again."""
    import clip_cull.scoring.prepare as worker

    session = session_for(tiny_model_files, store)
    index(store, session, photo_folder)
    fps = list(fingerprints(store, photo_folder).values())
    figures = store.measurements(fps, "quality", 1)
    conn = store.db.conn
    with store.writing():  # the cache as the previous version left it: figures in `quality`, before m007
        conn.execute("create table quality (fingerprint text primary key, focus float, highlights float, "
                     "shadows float, brightness float)")
        conn.executemany("insert into quality values (?, ?, ?, ?, ?)",
                         [(fp, v["focus"], v["highlights"], v["shadows"], v["brightness"]) for fp, v in figures.items()])
        conn.execute("delete from measurements")
        conn.execute("delete from _sqlite_migrations where name = 'm007_quality_as_measurements'")
    path = store.path
    store.close()
    upgraded = Store.open(path)
    try:
        tables = {r[0] for r in upgraded.db.execute("select name from sqlite_master where type = 'table'")}
        assert "quality" not in tables
        assert upgraded.measurements(fps, "quality", 1) == figures
        monkeypatch.setattr(worker, "decode_photo", lambda *a, **k: pytest.fail("decoded again"))
        again = index(upgraded, session_for(tiny_model_files, upgraded), photo_folder)
        assert (again.cached, again.embedded) == (8, 0)
    finally:
        upgraded.close()
