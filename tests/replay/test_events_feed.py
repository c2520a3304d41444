"""``REPLAY_FEED=events``: the replay calls the event feed before every request instant (not
every hour), each window starting where the last ended, and answers that instant's requests
after it. (What the feed pushes is ``tests/feast_plugins/test_windowed_served.py``'s.)"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pandas as pd

from core.settings import Settings
from replay.config import FEEDS, ReplayConfig
from replay.run import Clock, Replay


class RecordingEventsFeed:
    """Records its calls; says it runs per request instant, as ``replay.events_feed`` does."""

    __name__ = "events"
    per_instant = True

    def __init__(self, log):
        self.log = log

    def __call__(self, stream, use_case, store, start, end, records=None):
        self.log.append(("feed", start, end))
        return {}


class RecordingServer:
    def __init__(self, log):
        self.log = log

    def post(self, path, body):
        entities = body["flights"]
        if path == "/predict":
            self.log.append(("predict", [e["scheduled_departure"] for e in entities]))
        return 200, {"predictions": [{"probability": 0.5, "model_version": "v"}] * len(entities)}, 0.001


def test_the_event_feed_runs_before_every_request_instant(use_case, tmp_path):
    assert FEEDS["events"].per_instant and ReplayConfig(feed=FEEDS["events"]).name == "periodic+events"
    log: list = []
    replay = Replay.__new__(Replay)
    replay.use_case, replay.config = use_case, replace(ReplayConfig(), feed=RecordingEventsFeed(log))
    replay.feed, replay.stream, replay.store, replay.clock = replay.config.feed, None, object(), Clock()
    replay.fed_until, replay.work = None, Settings(data_dir=tmp_path)
    replay.latencies, replay.errors, replay.served = [], [], []
    t0 = datetime(2013, 2, 11, 13, 5, tzinfo=timezone.utc)
    instants = [t0, t0, t0 + timedelta(minutes=7), t0 + timedelta(minutes=52)]  # one hour, three instants
    events = pd.DataFrame({"origin": "JFK", "dest": "LAX", "carrier": "AA", "tailnum": "N1", "flight": 1,
                           "scheduled_departure": instants, "event_timestamp": instants, "flight_id": range(4),
                           "is_late": 0})
    replay.serve_day(RecordingServer(log), events, date(2013, 2, 11), 0)
    distinct = sorted(set(instants))
    feeds = [entry for entry in log if entry[0] == "feed"]
    assert [end for _, _, end in feeds] == distinct, "one feed call per request instant"
    assert all(a[2] == b[1] for a, b in zip(feeds, feeds[1:])), "each window starts where the last ended"
    assert [entry[0] for entry in log] == ["feed", "predict"] * 3, "each instant's requests after its feed"
