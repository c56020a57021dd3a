"""Whose a rating is: the cost of asking the journal, per sidecar, over a long history.

`tag`, `review`, `eval ratings` and `train ratings` ask the journal (Journal.last_write) for every
sidecar and photo they read: is its value exactly what clipcull last wrote there? This builds a
state database of RUNS tag runs, each over its own shoot of PHOTOS sidecars (RUNS x PHOTOS steps:
years of shoots), then times LOOKUPS lookups, half for sidecars of the first shoot and half for a
new shoot clipcull never wrote (the usual case: the answer is "nobody's"), with the indexes on
steps(dst) and steps(src) (state schema step m002) and, in the same run, without them.

    python bench/bench_ownership.py [--runs 200] [--photos 500] [--lookups 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from clip_cull.culling.journal import Journal
from clip_cull.store.state import StateStore


def build(path: str, runs: int, photos: int) -> StateStore:
    state = StateStore.open(path)
    with state.writing():
        for run in range(1, runs + 1):
            state.db.execute("insert into runs (id, kind, created_at, command, state) values (?, 'tag', '', '{}', 'done')",
                             [run])
            state.db.conn.executemany(
                "insert into steps (run_id, seq, action, src, dst, after_sha, state, owned)"
                " values (?, ?, 'sidecar', ?, ?, 'x', 'done', '{\"rating\": \"3\"}')",
                [(run, i, f"/shoot{run}/IMG_{i:05d}.jpg", f"/shoot{run}/IMG_{i:05d}.xmp") for i in range(photos)])
    return state


def timed(journal: Journal, photos: int, lookups: int) -> float:
    started = time.perf_counter()
    for i in range(lookups):
        found = journal.last_write(f"/shoot{1 if i % 2 else 'new'}/IMG_{i % photos:05d}.xmp")
        assert (found is not None) == bool(i % 2)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="clipcull-bench-ownership-")
    state = build(os.path.join(folder, "state.db"), args.runs, args.photos)
    journal = Journal(state)
    with_index = timed(journal, args.photos, args.lookups)
    state.db.execute("drop index idx_steps_dst")
    state.db.execute("drop index idx_steps_src")
    few = min(args.lookups, 100)  # a scan each: a sample is enough
    without = timed(journal, args.photos, few) * (args.lookups / few)
    state.close()
    steps = args.runs * args.photos
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"journal: {steps:,} steps; {args.lookups:,} lookups")
    print(f"with indexes:    {with_index / args.lookups * 1e3:.3f} ms a lookup")
    print(f"without indexes: {without / args.lookups * 1e3:.3f} ms a lookup ({without / with_index:.0f}x)")


if __name__ == "__main__":
    main()
