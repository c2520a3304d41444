"""Request bodies from real flights for the serving tests."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from core.settings import Settings
from tests.conftest import SERVE_END
from training.dataset import load_events


def flights_after_serve_end(data_dir, use_case, n: int | None = None) -> pd.DataFrame:
    """Flights departing in the hour after SERVE_END: the online store holds exactly what the
    offline join picks for them (the hourly and daily sources are complete up to it)."""
    events = load_events(Settings.from_env({"DATA_DIR": str(data_dir)}), use_case)
    when = events["scheduled_departure"]
    hour = events[(when >= SERVE_END) & (when < SERVE_END + timedelta(hours=1))]
    hour = hour.sort_values([use_case.id_column]).reset_index(drop=True)
    assert len(hour) >= 10, f"expected flights departing after {SERVE_END}, got {len(hour)}"
    return hour if n is None else hour.head(n)


def request_entity(row) -> dict:
    return {"origin": row.origin, "dest": row.dest, "carrier": row.carrier,
            "tailnum": None if pd.isna(row.tailnum) else row.tailnum, "flight": int(row.flight),
            "scheduled_departure": row.scheduled_departure.isoformat()}


def request_body(frame: pd.DataFrame) -> dict:
    return {"flights": [request_entity(r) for r in frame.itertuples()]}


def query_string(entity: dict) -> dict:
    return {k: v for k, v in entity.items() if v is not None}
