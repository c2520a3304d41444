"""The materialize stage: load the online store up to an instant, behind the
materialization gate (every file a registered feature view reads matches its contract).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from core.duck import connect, sql_ident
from core.files import atomic_write
from core.progress import Bar
from core.quiet import feast_prints
from core.settings import Settings
from feast_plugins.store import clear_online, feature_store
from pipeline.write_records import MaterializeRecorder, records_dir

#: The aircraft view's rows are valid from the epoch; a first materialization starts there.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def check_sources(settings: Settings, use_case, store, end: datetime) -> Path:
    """The materialization gate: every file a registered feature view reads must match
    that view's declared schema and the use case's value rules, with no row after the
    newest snapshot's as-of instant. Raises :class:`~validation.report.GateFailed` before
    anything is loaded. (Rows after ``end`` are fine: Feast loads up to ``end`` only.)"""
    from pipeline.errors import PipelineError
    from pipeline.ingest import latest_snapshot
    from validation.contracts import Context
    from validation.feast_contracts import source_contracts as derive
    from validation.feast_contracts import source_table_name
    from validation.gates import check_files, finish
    from validation.report import Report

    views = [v for v in store.list_feature_views() if getattr(v.batch_source, "path", None)]
    paths = {source_table_name(v): Path(v.batch_source.path) for v in views}
    contracts = {name: c for name, c in derive(views, store.list_entities(), use_case.source_rules).items()
                 if name in paths}
    report = Report("materialize", f"online store up to {end.isoformat()}")
    try:
        as_of = latest_snapshot(settings).as_of
    except PipelineError:
        as_of = None
    check_files(report, paths, contracts, Context(now=datetime.now(timezone.utc), as_of=as_of))
    return finish(report, settings.reports)


def materialize(settings: Settings, end: datetime, start: datetime | None = None, use_case=None,
                check: bool = True, written_at: datetime | None = None) -> None:
    """Load feature values into the online store up to ``end``, after the source tables
    passed their contracts (:func:`check_sources`; nothing is loaded otherwise).
    ``check=False`` only right after :func:`pipeline.features.build_sources` checked
    the very same files against the same contracts (as ``pipeline run`` does).

    With ``start`` it is ``feast materialize start end``; without, each view continues
    from its last materialization (``materialize-incremental``), except a view that must be
    loaded from the epoch: one never materialized; one materialized past ``end`` (a snapshot
    with an earlier as-of time); and one whose already-loaded part changed in its source
    (:func:`loaded_digest`: a reference row edited in place, as the aircraft rows are, all
    stamped at the epoch; a late or corrected row), which an incremental window would
    never read again. The last two are emptied online first, so no value from after
    ``end`` and no replaced value stays there (Redis also skips a write at the same
    instant as the value it holds).

    Progress (``core.progress``) shows each view as its load ends (Feast loads the reloaded
    views in one call, the others in another) and how many entity keys it then holds
    online; Feast's own prints are hidden (``core.quiet.feast_prints``).

    Every load appends a write record per view (``pipeline/write_records.py``), and so does
    a refusal by the gate or a load that fails (``ok`` false), stamped ``written_at``
    (default: the wall clock after the load; the replay passes its night).
    """
    if use_case is None:
        from core.usecase import load_use_case

        use_case = load_use_case()
    store = feature_store(settings)
    views = store.list_feature_views()
    windowed = _windowed_views(store)
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    recorder = MaterializeRecorder(records_dir(settings), end, written_at)
    if check:
        with recorder.refused(views, {v.name: start or _last_end(v) or EPOCH for v in views}):
            check_sources(settings, use_case, store, end)
    state = LoadedState(settings)
    if start is not None:
        state.forget(v.name for v in views)  # a window of the caller's: what it leaves out is unknown
        with _bar(settings, end, len(views) + len(windowed)) as bar:
            with feast_prints(), recorder.loading(views, start):
                # Named: Feast's stock engines refuse the windowed (stream) views, loaded below.
                store.materialize(start_date=start, end_date=end, feature_views=[v.name for v in views])
            for v in views:
                bar.update(1, v.name)
            _load_windowed(settings, store, end, windowed, bar)
        if start <= EPOCH:
            state.record({v.name: loaded_digest(v, end) for v in views}, end)
        return

    # Each view's source, summarised at its last end (what the store holds) and at ``end``
    # (what it will hold): one scan per view. The sources do not change while loading.
    at = {v.name: [t for t in (_last_end(v), end) if t is not None] for v in views}
    con = connect()
    try:
        digests = {v.name: dict(zip(at[v.name], loaded_digests(v, at[v.name], con))) for v in views}
    finally:
        con.close()
    ahead = [v for v in views if _last_end(v) is not None and _last_end(v) > end]
    changed = [v for v in views if v not in ahead and _last_end(v) is not None
               and not state.holds(v.name, _last_end(v), digests[v.name][_last_end(v)])]
    # Rolling back or replacing: a reload alone would leave values online that the source
    # no longer has up to ``end`` (Redis skips writes not newer than what it holds; any
    # store keeps keys that have no row up to ``end``).
    if ahead or changed:
        clear_online(store, ahead + changed)
    reload = [v.name for v in views if v in ahead or v in changed or _last_end(v) is None]
    rest = [v.name for v in views if v.name not in reload]
    with _bar(settings, end, len(views) + len(windowed)) as bar:
        if reload:
            with feast_prints(), recorder.loading([v for v in views if v.name in reload], EPOCH):
                store.materialize(start_date=EPOCH, end_date=end, feature_views=reload)
            for name in reload:
                bar.update(1, _loaded(name, digests[name][end], views))
        if rest:
            with feast_prints(), recorder.loading([v for v in views if v.name in rest],
                                                  {v.name: _last_end(v) for v in views}):
                store.materialize_incremental(end_date=end, feature_views=rest)
            for name in rest:
                bar.update(1, _loaded(name, digests[name][end]))
        _load_windowed(settings, store, end, windowed, bar)
    state.record({v.name: digests[v.name][end] for v in views}, end)


def _windowed_views(store) -> list:
    from feast_plugins.windows import is_windowed

    return [v for v in store.list_stream_feature_views() if is_windowed(v)]


def _load_windowed(settings: Settings, store, end: datetime, windowed: list, bar: Bar) -> None:
    """Windowed views' states rebuilt from their events known up to ``end`` (idempotent: the
    events pushed since are kept, none counted twice); Feast's own materialize skips them.
    One progress line per view, with the events it holds."""
    from feast_plugins.push_writer import materialize_events

    if windowed:
        with feast_prints():
            loaded = materialize_events(settings, store, windowed, end)
        for view in windowed:
            bar.update(1, f"{view.name}: {loaded[view.name]:,} events")


def _bar(settings: Settings, end: datetime, views: int) -> Bar:
    """Progress over the views, one line per view (there are few); the last line says where to."""
    return Bar("materialize", total=views, unit="views", every=0,
               end_note=f"up to {end.isoformat()} into the {settings.profile} profile's online store")


def _loaded(name: str, digest: str | None, reloaded_from=()) -> str:
    """A view's progress note: its name, the entity keys it holds online, whether it was
    loaded before (``reloaded_from``: the views, when it was loaded from the epoch)."""
    keys = digest_keys(digest)
    again = any(v.name == name and _last_end(v) is not None for v in reloaded_from)
    return name + ("" if keys is None else f": {keys:,} keys online") + (", reloaded" if again else "")


def digest_keys(digest: str | None) -> int | None:
    """How many entity keys a :func:`loaded_digest` counted (None: no digest)."""
    return None if digest is None else int(digest.split(":", 1)[0])


def _last_end(view) -> datetime | None:
    last = view.most_recent_end_time
    return None if last is None else (last if last.tzinfo else last.replace(tzinfo=timezone.utc))


def loaded_digest(view, until: datetime) -> str | None:
    """A digest of what the online store can still serve for ``view`` once its source is
    loaded up to ``until``: each entity key's newest source row (every column) before
    ``until``, as materialization keeps it, among rows within the view's TTL of ``until``
    (an older value is stale at any later request, online as offline). Rows at ``until``
    itself are left out: the next incremental window starts there and reads them again
    (Feast's window includes both ends), so a row stamped exactly at the last end that
    arrived after it (a delivery that ends there) is loaded without a reload. It is order-free,
    and it changes when such a row is edited, removed or overtaken by a late row, but not
    when older rows leave or change (a sliding history recomputes its oldest days). None for
    a source that is not a local Parquet table (nothing to compare: such views are loaded
    incrementally only). DuckDB's ``hash``: a DuckDB upgrade may change every digest, which
    costs one reload from the epoch."""
    return loaded_digests(view, [until])[0]


def loaded_digests(view, instants: list[datetime], con=None) -> list[str | None]:
    """:func:`loaded_digest` at each of ``instants``, from one scan of the source (on ``con``,
    a DuckDB connection from ``core.duck.connect``, when given: opening one costs more than
    a scan of these tables)."""
    source = view.batch_source
    path = getattr(source, "path", None)
    if not path or "://" in path.removeprefix("file://"):
        return [None] * len(instants)
    path = path.removeprefix("file://")
    if Path(path).is_dir():
        path = str(Path(path) / "**" / "*.parquet")
    to_source = {new: old for old, new in (source.field_mapping or {}).items()}
    ts = sql_ident(to_source.get(source.timestamp_field, source.timestamp_field))
    keys = [sql_ident(to_source.get(c.name, c.name)) for c in view.entity_columns]
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    no_limit = EPOCH - timedelta(days=1)  # TTL 0: every row can be served
    windows = [(until, until - view.ttl if view.ttl else no_limit) for until in instants]
    newest = ", ".join(f"max_by(hash(t), ({ts}, hash(t))) FILTER (WHERE {ts} < ? AND {ts} >= ?) AS n{i}"
                       for i in range(len(windows)))
    totals = ", ".join(f"count(n{i}), coalesce(sum(n{i}::HUGEINT), 0)" for i in range(len(windows)))
    params = [value for window in windows for value in window]
    own = con is None
    con = connect() if own else con
    try:
        row = con.execute(f"SELECT {totals} FROM (SELECT {newest} FROM read_parquet(?) t{group})",
                          [*params, path]).fetchone()
    finally:
        if own:
            con.close()
    return [f"{row[2 * i]}:{row[2 * i + 1]}" for i in range(len(windows))]


class LoadedState:
    """Per feature view, what the online store was loaded from: its materialized end and the
    :func:`loaded_digest` of its source then. One JSON file per profile under DATA_DIR (each
    profile has its own registry and online store); written whole or not at all."""

    def __init__(self, settings: Settings):
        self.path = settings.data_dir / f"online_loaded-{settings.profile}.json"
        try:
            self.views: dict = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):  # none yet, or unreadable: every view reloads once
            self.views = {}

    def holds(self, view: str, until: datetime, digest: str | None) -> bool:
        """Whether the online store still holds what ``view``'s source gives up to ``until``,
        ``digest`` being its :func:`loaded_digest` now (None: the source cannot tell, so yes)."""
        if digest is None:
            return True
        known = self.views.get(view) or {}
        try:
            recorded_until = datetime.fromisoformat(known.get("until", ""))
        except ValueError:
            return False
        return recorded_until == until and known.get("digest") == digest

    def record(self, digests: dict[str, str | None], until: datetime) -> None:
        """The views (name -> :func:`loaded_digest` at ``until``) are loaded up to ``until``."""
        self.views.update({name: {"until": until.isoformat(), "digest": digest} for name, digest in digests.items()})
        atomic_write(self.path, json.dumps(self.views, indent=2, sort_keys=True))

    def forget(self, names) -> None:
        for name in names:
            self.views.pop(name, None)
        atomic_write(self.path, json.dumps(self.views, indent=2, sort_keys=True))
