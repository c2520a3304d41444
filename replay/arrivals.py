"""The raw data as it would have arrived: time-stamped tables sliced by arrival time.

Each night the replay writes a delivery directory (``RAW_DIR`` for ingest) holding, for
every table the use case names in ``arrival_columns``, the rows that arrived in the
sliding history window ``[since, until)``, and every reference table whole. The window
keeps each snapshot (and so ingest, the feature pipelines and the training sets) a bounded
size however far the replay has gone.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.usecase import UseCase


class Arrivals:
    """The whole history in memory (Arrow), with each row's arrival instant."""

    def __init__(self, use_case: UseCase, frames: dict[str, pd.DataFrame]):
        self.tables = {name: pa.Table.from_pandas(frame, preserve_index=False) for name, frame in frames.items()}
        missing = [t for t in use_case.arrival_columns if t not in frames]
        if missing:
            raise ValueError(f"arrival_columns names table(s) {missing} the raw data does not have")
        self.arrival = {name: pd.to_datetime(frames[name][column], utc=True).dt.tz_convert(None).to_numpy()
                        for name, column in use_case.arrival_columns.items()}
        self._written: set[Path] = set()

    def end(self) -> datetime:
        """The newest arrival instant in the data."""
        return max(pd.Timestamp(a.max()).tz_localize("UTC") for a in self.arrival.values()).to_pydatetime()

    def rows(self, name: str, since: datetime | None, until: datetime) -> pa.Table:
        """Rows of ``name`` that arrived in ``[since, until)`` (``since`` None: from the start)."""
        a = self.arrival[name]
        mask = a < np.datetime64(pd.Timestamp(until).tz_convert(None))
        if since is not None:
            mask &= a >= np.datetime64(pd.Timestamp(since).tz_convert(None))
        return self.tables[name].filter(pa.array(mask))

    def deliver(self, directory: Path, since: datetime | None, until: datetime, duplicate_from: datetime | None = None
                ) -> dict[str, int]:
        """Write the delivery for the window ``[since, until)`` into ``directory``; return
        rows per table. ``duplicate_from``: a bad delivery, whose rows that arrived from
        that instant on come twice (a re-sent partition): key checks must refuse it."""
        directory.mkdir(parents=True, exist_ok=True)
        counts = {}
        for name, table in self.tables.items():
            path = directory / f"{name}.parquet"
            if name in self.arrival:
                table = self.rows(name, since, until)
                if duplicate_from is not None:
                    table = pa.concat_tables([table, self.rows(name, duplicate_from, until)])
                pq.write_table(table, path, compression="zstd")
            elif path not in self._written:  # reference tables: the same file every night
                pq.write_table(table, path, compression="zstd")
                self._written.add(path)
            counts[name] = table.num_rows
        return counts
