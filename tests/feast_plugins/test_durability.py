"""A crash in the middle of a write leaves the packed SQLite store readable, holding the
old values or the new ones, never a mix.

A writer process (forked from the test) materializes one view through
:class:`PackedSqliteOnlineStore` with the settings ``feature_repo/feature_store.yaml``
ships, over and over: generation ``g`` sets every row's event timestamp, value and
padding to ``g`` in one transaction (``online_write_arrow``, the materialization path).
Every row names its generation three times, so a store holding two is a torn write.

* kill -9: the writer is killed at random instants while it writes; the store, read
  through a read-only connection as the server reads it, holds every row of the last
  generation it reported committed, or of the one it was writing. The next writer
  recovers it and goes on.
* a reader meanwhile: the server's read-only connections (``packed_reader.DirectRead``)
  answer, and find the store sound, while the writer is stopped in the middle of a write
  (a rollback-journal store would keep them waiting, then fail: "database is locked").
* power cut: the writer is frozen (SIGSTOP) at random instants mid-write and its files
  copied as the disk holds them, then the writes SQLite has not yet synced are lost the
  ways a power cut may lose them: a write-ahead log cut after the frames the last
  checkpoint synced (at a frame, mid-frame, or with a hole), or with ``synchronous=OFF`` a
  rollback journal never synced at all. The shared-memory index (``-shm``) is memory and
  is lost too. Every such copy must open, pass ``PRAGMA integrity_check`` and hold one
  generation, no newer than the one being written.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import struct
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: Rows per generation, and padding per row: a transaction of several MB, larger than
#: SQLite's page cache, so a write is in progress most of the time and spills pages.
ROWS = 30_000
PAD = 12


def _config(db: Path):
    """A RepoConfig whose online store is the shipped ``feature_store.yaml``'s, at ``db``."""
    from feast.repo_config import RepoConfig

    shipped = yaml.safe_load((ROOT / "feature_repo" / "feature_store.yaml").read_text())["online_store"]
    return RepoConfig(project="p", provider="local", registry=str(db.with_name("registry.db")),
                      online_store={**shipped, "path": str(db)}, entity_key_serialization_version=3,
                      repo_path=str(db.parent))


def _entity():
    from feast import Entity, ValueType

    return Entity(name="k", join_keys=["k"], value_type=ValueType.INT64)


def _view():
    from feast import FeatureView, Field, FileSource
    from feast.types import Int64, String

    source = FileSource(path="unused.parquet", timestamp_field="ts")
    return FeatureView(name="v", entities=[_entity()], source=source,
                       schema=[Field(name="k", dtype=Int64), Field(name="g", dtype=Int64),
                               Field(name="pad", dtype=String)])


def _generation_table(g: int):
    import pyarrow as pa

    return pa.table({"k": pa.array(range(ROWS), pa.int64()), "g": pa.array([g] * ROWS, pa.int64()),
                     "pad": [f"{g:010d}" * PAD] * ROWS,
                     "ts": pa.array([g * 1_000_000] * ROWS, pa.timestamp("us", tz="UTC"))})


def write_forever(db: Path, first: int, out: int) -> None:
    """The writer: generation after generation, each announced (to the file descriptor
    ``out``) before and after its commit."""
    from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStore

    store, config, view = PackedSqliteOnlineStore(), _config(db), _view()
    store.update(config, [], [view], [], [], partial=False)
    g = first
    while True:
        table = _generation_table(g)
        os.write(out, f"start {g}\n".encode())
        store.online_write_arrow(config, view, table)
        os.write(out, f"done {g}\n".encode())
        g += 1


class Writer:
    """A writer process and the lines it printed (read by a thread, so waits are bounded).

    Forked from this process, which has imported Feast already: a new interpreter would
    import it again for every writer."""

    def __init__(self, db: Path, first: int):
        import multiprocessing

        read, write = os.pipe()
        self.process = multiprocessing.get_context("fork").Process(target=write_forever, args=(db, first, write),
                                                                   daemon=True)
        self.process.start()
        os.close(write)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(read,), daemon=True).start()

    def _read(self, fd: int):
        with os.fdopen(fd) as lines:
            for line in lines:
                self.lines.put(line.strip())

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self) -> None:
        if self.process.is_alive():
            self.signal(signal.SIGKILL)
        self.process.join(timeout=30)

    def wait_for(self, line: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.seen:
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                self.stop()
                pytest.fail(f"the writer did not print {line!r} in {timeout} s (exit code {self.process.exitcode})")

    def drain(self) -> None:
        """Everything printed so far (the writer stopped or dead)."""
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())

    def last(self, word: str) -> int:
        return max((int(line.split()[1]) for line in self.seen if line.startswith(word + " ")), default=0)

    def frozen_mid_write(self, rng: random.Random, times: int = 4):
        """Yield ``n`` (0 .. times-1) each time the writer is frozen (SIGSTOP) at a random
        point of a write transaction; it runs on once the caller's step is done."""
        self.wait_for("done 1")
        started = time.monotonic()
        self.wait_for("done 2")
        duration = time.monotonic() - started
        for n in range(times):
            self.wait_for(f"start {4 + 2 * n}")
            time.sleep(rng.uniform(0.05, 0.9) * duration)
            self.signal(signal.SIGSTOP)
            try:
                self.drain()
                yield n
            finally:
                self.signal(signal.SIGCONT)


def generations(db: Path, read_only: bool = True) -> set[int]:
    """The generations the store's rows hold, after ``PRAGMA integrity_check``. All rows of
    one generation hold the same bytes, whose event timestamp, value and padding agree (a
    row torn inside is a generation of its own, and fails)."""
    from feast_plugins.packed_layout import table_name, unpack

    uri = f"{db.absolute().as_uri()}?mode=ro" if read_only else f"{db.absolute().as_uri()}?mode=rw"
    conn = sqlite3.connect(uri, uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"{db} is corrupt"
        groups = conn.execute(f'SELECT event_ts, packed, count(*) FROM "{table_name("p", "v")}" '
                              "GROUP BY event_ts, packed").fetchall()
    finally:
        conn.close()
    assert sum(n for _, _, n in groups) == ROWS, f"{sum(n for _, _, n in groups)} rows, not {ROWS}"
    found = set()
    for ts, packed, _ in groups:
        values = unpack(packed)
        g = values["g"].int64_val
        assert ts == g * 1_000_000 and values["pad"].string_val == f"{g:010d}" * PAD, "a row torn inside"
        found.add(g)
    return found


def test_the_shipped_store_is_a_write_ahead_log_synced_normally(tmp_path):
    """journal_mode WAL (in the file) and synchronous NORMAL (1) on the store's connection."""
    from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStore

    db = tmp_path / "online_store.db"
    store, config = PackedSqliteOnlineStore(), _config(db)
    store.update(config, [], [_view()], [], [], partial=False)
    conn = store._get_conn(config)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,)
    assert db.read_bytes()[18:20] == b"\x02\x02", "the file's header does not say WAL"
    store.teardown(config, [], [])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(db.name)], "teardown left the store's files"


def test_kill_9_mid_write_leaves_the_old_or_the_new_values(tmp_path):
    db = tmp_path / "online_store.db"
    rng = random.Random(19)
    committed, interrupted = 0, 0
    for _ in range(3):
        writer = Writer(db, committed + 1)
        try:
            writer.wait_for(f"done {committed + 1}")  # a whole generation written by this writer
            started = time.monotonic()
            writer.wait_for(f"done {committed + 2}")
            duration = time.monotonic() - started
            writer.wait_for(f"start {committed + 3}")
            time.sleep(rng.uniform(0.05, 0.9) * duration)
            writer.signal(signal.SIGKILL)
        finally:
            writer.stop()
        assert writer.process.exitcode == -signal.SIGKILL
        writer.drain()
        done, writing = writer.last("done"), writer.last("start")
        interrupted += writing > done
        found = generations(db)
        assert len(found) == 1 and found <= {done, writing}, (found, done, writing)
        committed = found.pop()
    assert interrupted, "no kill landed inside a write"


def _shm_backfill_attempted(shm: bytes) -> int:
    """The WAL frames the last checkpoint began copying into the database (``-shm``'s
    ``WalCkptInfo.nBackfillAttempted``): the log was synced at least this far."""
    return struct.unpack_from("=I", shm, 128)[0] if len(shm) >= 132 else 0


def power_cut_states(files: dict[str, bytes], synchronous: str, rng: random.Random) -> list[tuple[str, dict]]:
    """What the disk may hold after a power cut, from the files as the OS had them
    (``files``: suffix -> bytes, "" the database): SQLite's writes since its last sync may
    be lost, partly or in any order. Losing more than that is not simulated (that would
    be a broken disk). The ``-shm`` index is memory: always lost."""
    db = files[""]
    kept = {suffix: data for suffix, data in files.items() if suffix != "-shm"}
    states = [("everything reached the disk", kept)]
    if "-journal" in files and synchronous == "OFF":
        # The rollback journal is never synced: the database pages it protects may reach
        # the disk without it.
        states.append(("the unsynced rollback journal lost", {"": db}))
    wal = files.get("-wal", b"")
    if len(wal) > 32 and synchronous in ("OFF", "NORMAL"):
        page_size = struct.unpack_from(">I", wal, 8)[0]
        frame = 24 + page_size
        frames = (len(wal) - 32) // frame
        synced = 0 if synchronous == "OFF" else min(_shm_backfill_attempted(files.get("-shm", b"")), frames)
        cuts = sorted({synced, frames, *(rng.randint(synced, frames) for _ in range(3))})
        for cut in cuts:
            states.append((f"log cut after frame {cut} of {frames}", {"": db, "-wal": wal[:32 + cut * frame]}))
        if frames > synced:
            torn = rng.randint(synced, frames - 1)
            states.append((f"frame {torn + 1} torn", {"": db, "-wal": wal[:32 + torn * frame + frame // 2]}))
            hole = bytearray(wal)
            hole[32 + torn * frame:32 + (torn + 1) * frame] = bytes(frame)
            states.append((f"frame {torn + 1} never written, later ones were", {"": db, "-wal": bytes(hole)}))
    return states


def test_power_cut_mid_write_leaves_a_readable_store_with_old_or_new_values(tmp_path):
    db = tmp_path / "online_store.db"
    synchronous = str(getattr(_config(db).online_store, "synchronous", None) or "FULL").upper()
    rng = random.Random(12)
    writer = Writer(db, 1)
    checked = 0
    try:
        for n in writer.frozen_mid_write(rng):
            files = {suffix: Path(f"{db}{suffix}").read_bytes()
                     for suffix in ("", "-wal", "-shm", "-journal") if Path(f"{db}{suffix}").exists()}
            writing = writer.last("start")
            for name, state in power_cut_states(files, synchronous, rng):
                copy = tmp_path / f"cut{n}-{checked}" / "online_store.db"
                copy.parent.mkdir()
                for suffix, data in state.items():
                    Path(f"{copy}{suffix}").write_bytes(data)
                found = generations(copy, read_only=False)
                assert len(found) == 1 and 1 <= min(found) <= writing, (name, found, writing)
                checked += 1
    finally:
        writer.stop()
    assert checked >= 4 * 3, f"only {checked} states checked"


def test_a_copy_taken_while_a_writer_writes_holds_one_generation(tmp_path):
    """``copy_database`` (SQLite's backup API), where the tests and benchmarks copy a data
    dir: one committed state however busy the writer, in a single file (no log beside it)."""
    from feast_plugins.packed_layout import copy_database

    db = tmp_path / "online_store.db"
    writer = Writer(db, 1)
    copies = []
    try:
        writer.wait_for("done 1")
        for n in range(3):
            writer.wait_for(f"start {2 + n}")
            copy = tmp_path / f"copy{n}" / "online_store.db"
            copy.parent.mkdir()
            copy_database(db, copy)
            writer.drain()
            copies.append((copy, writer.last("start")))
    finally:
        writer.stop()
    for copy, writing in copies:
        assert [p.name for p in copy.parent.iterdir()] == [copy.name], "the copy is not one file"
        found = generations(copy)
        assert len(found) == 1 and 1 <= min(found) <= writing, (found, writing)



def test_the_servers_reads_go_on_while_a_writer_is_in_the_middle_of_a_write(tmp_path):
    """The server's read path (``DirectRead``: read-only connections, ``mode=ro``) against a
    store a writer process is materializing into: frozen (SIGSTOP) at random instants of a
    write, holding its transaction open, the writer keeps no reader waiting. Every answer,
    and the server's whole-store check, sees one generation: the last committed one."""
    from feast import FeatureService, FeatureStore

    from feast_plugins.packed_reader import DirectRead

    db = tmp_path / "online_store.db"
    store = FeatureStore(config=_config(db))
    view = _view()
    store.apply([_entity(), view, FeatureService(name="s", features=[view])])
    direct = DirectRead.for_store(store, store.get_feature_service("s"))
    assert direct is not None, "the packed store is not read directly"
    rows = [{"k": k} for k in range(0, ROWS, 997)]
    rng = random.Random(5)
    writer = Writer(db, 1)
    answers = []
    try:
        for _ in writer.frozen_mid_write(rng):
            done, writing = writer.last("done"), writer.last("start")
            answer = direct.read(rows)
            problem = direct.verify()
            assert problem is None, problem
            answers.append((set(answer["v__g"]), set(answer["v__g__ts"]), done, writing))
    finally:
        writer.stop()
    for found, stamps, done, writing in answers:
        assert len(found) == 1 and found == stamps and found <= {done, writing}, (found, stamps, done, writing)
    assert any(writing > done for _, _, done, writing in answers), "no read landed inside a write"
