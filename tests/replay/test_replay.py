"""The replay: a few weeks of the real January 2013 through the whole platform, twice."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.settings import Settings
from replay.arrivals import Arrivals
from replay.config import ReplayConfig, ReplayError
from replay.report import conclusion, strip_timings
from replay.run import local_midnight, retrain_reason, run_replay

pytestmark = pytest.mark.replay

#: Three weeks of history, six served days (Jan 22-27), a bad delivery on the night after Jan 23.
CONFIG = ReplayConfig(policy="triggered", start=date(2013, 1, 1), warmup_days=21, days=6, window_days=21,
                      monitor_every_days=3, num_boost_round=100, bad_days=(date(2013, 1, 23),))


class RecordingFeed:
    """An intraday feed that feeds nothing and records how it was called."""

    __name__ = "recording"

    def __init__(self):
        self.calls = []

    def __call__(self, settings, use_case, store, start, end, records=None):
        stream = pq.read_table(settings.raw_dir / "flights.parquet").num_rows
        self.calls.append({"start": start, "end": end, "stream_rows": stream, "store": store is not None,
                           "records": records is not None})
        return {}


@pytest.fixture(scope="module")
def feeds():
    return [RecordingFeed(), RecordingFeed()]


@pytest.fixture(scope="module")
def two_replays(tmp_path_factory, raw_slice_dir, use_case, feeds):
    """The same replay twice, in two data directories (same seed, same data)."""
    out = []
    for name, feed in zip(("a", "b"), feeds):
        settings = Settings(data_dir=tmp_path_factory.mktemp(f"replay_{name}"), raw_dir=raw_slice_dir)
        out.append(run_replay(settings, use_case, replace(CONFIG, feed=feed), say=lambda *a: None))
    return out


def test_the_intraday_feed_runs_before_each_hour_with_flights(two_replays, feeds, raw_slice_dir):
    calls = feeds[0].calls
    flights = pd.read_parquet(raw_slice_dir / "flights.parquet")
    local = pd.to_datetime(flights[["year", "month", "day"]])
    served = flights[(local >= "2013-01-22") & (local <= "2013-01-27")]
    hours = sorted(set(pd.to_datetime(served["time_hour"], utc=True)))
    assert [c["end"] for c in calls] == [h.to_pydatetime() for h in hours], "one call per hour with departures"
    assert calls[0]["end"] - calls[0]["start"] == timedelta(hours=1)
    assert all(c["start"] == before["end"] for before, c in zip(calls, calls[1:])), \
        "each window starts where the last ended (nothing between two hours with flights is skipped)"
    assert {c["stream_rows"] for c in calls} == {len(flights)}, "the feed's stream holds the whole history"
    assert all(c["store"] for c in calls)
    assert feeds[1].calls == calls


def test_replay_serves_every_scheduled_flight_of_the_served_days(two_replays, raw_slice_dir):
    summary = two_replays[0]
    flights = pd.read_parquet(raw_slice_dir / "flights.parquet")
    local = pd.to_datetime(flights[["year", "month", "day"]])
    expected = int(((local >= "2013-01-22") & (local <= "2013-01-27")).sum())
    assert summary["served_days"] == 6 and summary["last_day"] == "2013-01-27"
    assert summary["events"] == expected, "every flight scheduled on a served day is answered once"
    assert summary["errors"] == [], f"the server refused requests: {summary['errors'][:3]}"
    assert summary["overall"]["dynamic"]["rows"] == expected, "every flight got a dynamic prediction"


def test_a_bad_delivery_is_refused_recorded_and_the_replay_goes_on(two_replays):
    summary = two_replays[0]
    [refusal] = summary["refusals"]
    assert refusal["night"] == local_midnight(date(2013, 1, 24), "America/New_York").isoformat()
    assert refusal["gate"] == "ingest"
    assert any("unique_key" in f for f in refusal["failures"]), refusal["failures"]
    served_after = [w for w in summary["weeks"] if w["to"] and w["to"] > "2013-01-24"]
    assert served_after and served_after[0]["dynamic"]["rows"] > 0, "days after the bad one are still served"


def test_static_and_dynamic_inference_agree_without_an_intraday_feed(two_replays):
    """No feed: the online store holds what the night materialized, the offline join sees the
    same sources, and the same champion answers both; so every prediction is the same. This
    is served == offline, flight by flight, over a replay with promotions in it."""
    o = two_replays[0]["overall"]
    assert o["same_events"] == two_replays[0]["events"], "every flight was precomputed the night before"
    assert o["identical_predictions"] == o["same_events"], f"mean |dynamic - static| {o['mean_abs_difference']}"
    assert o["latency_ms"]["dynamic"]["requests"] == o["latency_ms"]["static"]["requests"] > 0


def test_every_retrain_goes_through_the_gate_and_triggers_follow_the_alerts(two_replays):
    summary = two_replays[0]
    initial, *later = summary["retrains"]
    assert initial["reason"] == "initial" and initial["promoted"], initial
    for r in summary["retrains"]:
        assert isinstance(r["promoted"], bool) and (r["promoted"] or r["failures"]), r
    last_night = local_midnight(date(2013, 1, 28), "America/New_York").isoformat()
    fired = {m["night"] for m in summary["monitoring"]
             if any(rule.startswith(CONFIG.trigger_rules) for rule in m["rules"]) and m["night"] != last_night}
    assert {r["night"] for r in later} == fired, "the triggered policy retrains exactly when its alerts fired"
    assert all(r["reason"].startswith("alerts: ") for r in later)
    assert summary["promotions"] + summary["rejections"] == len(summary["retrains"])


def test_replay_is_deterministic(two_replays):
    a, b = (strip_timings(s) for s in two_replays)
    assert a == b, "same seed and data must give the same report numbers"


def test_report_files_and_a_conclusion_computed_from_the_numbers(two_replays):
    summary = two_replays[1]
    page = open(summary["paths"]["html"]).read()
    assert page.count("<img") >= 5, "the report has its plots"
    saved = json.loads(open(summary["paths"]["json"]).read())
    assert saved["conclusion"] == summary["conclusion"]
    auc = summary["overall"]["dynamic"]["auc"]
    assert f"AUC {auc:.3f}" in summary["conclusion"][0]
    changed = json.loads(json.dumps(summary))
    changed["overall"]["dynamic"]["auc"] = 0.5
    assert conclusion(changed)[0] != summary["conclusion"][0], "the text follows the numbers"


def test_the_report_speaks_of_entities_and_events(two_replays):
    """The replay is platform code: its report never names the use case's own things."""
    summary = two_replays[0]

    def keys(value):
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        return {k for v in value for k in keys(v)} if isinstance(value, list) else set()

    assert not [k for k in keys(summary) if "flight" in k.lower()]
    assert summary["weeks"][0]["events"] and summary["overall"]["same_events"] == summary["events"]
    sentences = " ".join(summary["conclusion"] + summary["conclusion_timing"])
    assert "flight" not in sentences.lower() and f"({summary['events']:,} events)" in sentences, sentences
    assert "up to 100 entities" in sentences, sentences


def test_retrain_reason_per_policy():
    periodic = replace(CONFIG, policy="periodic", retrain_every_days=7)
    assert [n for n in range(1, 22) if retrain_reason(periodic, n, True, [])] == [7, 14, 21]
    assert retrain_reason(periodic, 7, False, []) is None, "a refused night changes nothing"
    assert retrain_reason(replace(CONFIG, policy="static"), 7, True, ["drift_x"]) is None
    assert retrain_reason(CONFIG, 3, True, []) is None
    assert retrain_reason(CONFIG, 3, True, ["quality_auc"]) == "alerts: quality_auc"
    with pytest.raises(ReplayError, match="policy 'weekly'"):
        ReplayConfig(policy="weekly")


def test_arrivals_slice_by_arrival_time_and_a_bad_delivery_duplicates(tmp_path, use_case):
    hours = pd.date_range("2013-01-01", periods=48, freq="h", tz="UTC")
    frames = {"flights": pd.DataFrame({"time_hour": hours.strftime("%Y-%m-%dT%H:%M:%SZ"), "x": range(48)}),
              "weather": pd.DataFrame({"time_hour": hours.strftime("%Y-%m-%dT%H:%M:%SZ"), "t": 1.0}),
              "planes": pd.DataFrame({"tailnum": ["N1", "N2"]})}
    arrivals = Arrivals(use_case, frames)
    since, until = datetime(2013, 1, 1, 6, tzinfo=timezone.utc), datetime(2013, 1, 2, tzinfo=timezone.utc)
    counts = arrivals.deliver(tmp_path, since, until)
    assert counts == {"flights": 18, "weather": 18, "planes": 2}, "rows in [since, until); reference tables whole"
    assert pq.read_table(tmp_path / "flights.parquet").column("x").to_pylist() == list(range(6, 24))
    bad = arrivals.deliver(tmp_path, since, until, duplicate_from=datetime(2013, 1, 1, 22, tzinfo=timezone.utc))
    assert bad["flights"] == 20, "the last two hours arrive twice"


@pytest.mark.serving
def test_precomputed_endpoint_answers_from_the_lookup(served_dir, use_case):
    from serving.app import create_app
    from serving.precomputed import entity_key, lookup_path, write_predictions
    from tests.serving.helpers import flights_after_serve_end, request_body

    flights = flights_after_serve_end(served_dir, use_case, 3)
    body = request_body(flights)
    entities = body["flights"]
    fields = use_case.request_fields
    parsed = [{**e, "scheduled_departure": datetime.fromisoformat(e["scheduled_departure"])} for e in entities]
    write_predictions(lookup_path(served_dir), [(entity_key(parsed[0], fields), 0.25, "v1"),
                                                (entity_key(parsed[2], fields), 0.75, "v2")])
    client = create_app({"DATA_DIR": served_dir}).test_client()
    answer = client.post("/precomputed", json=body)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["predictions"] == [{"probability": 0.25, "model_version": "v1"},
                                                {"probability": None, "model_version": None},
                                                {"probability": 0.75, "model_version": "v2"}]
    # The key is the instant, whatever offset the request writes it with.
    shifted = dict(entities[0], scheduled_departure=parsed[0]["scheduled_departure"]
                   .astimezone(timezone.utc).isoformat())
    assert client.post("/precomputed", json={"flights": [shifted]}).get_json()["predictions"][0]["probability"] == 0.25
    bad = client.post("/precomputed", json={"flights": [dict(entities[0], flight="x")]})
    assert bad.status_code == 400 and bad.get_json()["field"] == "flights[0].flight", bad.get_json()


def test_ingest_takes_a_declared_as_of_and_refuses_data_after_it(tmp_path, raw_slice_dir, use_case):
    from pipeline.ingest import ingest, list_snapshots
    from validation.report import GateFailed

    settings = Settings(data_dir=tmp_path / "data", raw_dir=raw_slice_dir)
    with pytest.raises(GateFailed) as refused:
        ingest(settings, use_case, declared_as_of=datetime(2013, 2, 1, tzinfo=timezone.utc))
    assert [f.check for f in refused.value.report.failures] == ["as_of_declared"]
    assert list_snapshots(settings) == [], "a refused delivery writes no snapshot"
    midnight = local_midnight(date(2013, 3, 1), "America/New_York")
    assert ingest(settings, use_case, declared_as_of=midnight).as_of == midnight, \
        "the delivery is complete up to its declared instant, after its last event"


def feed_replay(tmp_path_factory, raw_slice_dir, use_case, feed: str, service: str, warmup_days: int):
    """A 3-day static replay of ``service`` with ``feed`` from 2013-01-01 after ``warmup_days``,
    monitored once over the 3 days: its settings, summary and that monitoring check (every
    served flight answered without error, logged and monitored)."""
    from replay.config import FEEDS

    config = ReplayConfig(policy="static", start=date(2013, 1, 1), warmup_days=warmup_days, days=3,
                          window_days=warmup_days, monitor_every_days=3, num_boost_round=50, feed=FEEDS[feed],
                          feature_service=service)
    settings = Settings(data_dir=tmp_path_factory.mktemp(f"replay_{feed}"), raw_dir=raw_slice_dir)
    summary = run_replay(settings, use_case.with_feature_service(service), config, say=lambda *a: None)
    assert summary["errors"] == []
    [check] = summary["monitoring"]
    assert check["rows"] == summary["events"], "every served flight was logged and monitored"
    return settings, summary, check


def test_push_feed_serves_what_the_offline_join_sees(tmp_path_factory, raw_slice_dir, use_case):
    """The real intraday feed (push sources, hour by hour) on the fresher FeatureService:
    monitoring finds no feature of any served flight differing from its point-in-time
    offline value (without a feed, the day's weather is stale online and differs), and the
    static predictions made the night before differ from the dynamic ones for most flights."""
    settings, summary, check = feed_replay(tmp_path_factory, raw_slice_dir, use_case, "push", "late_arrival_v2", 21)
    assert summary["config"]["name"] == "static+push+late_arrival_v2"
    assert summary["events"] > 2000
    assert check["skew_features"] == 0, f"served features differ from the offline join: {check}"
    o = summary["overall"]
    assert o["same_events"] == summary["events"]
    assert o["identical_predictions"] < 0.5 * o["same_events"], "fresh features changed most dynamic answers"
    # Every push left a write record in the replay's own DATA_DIR, stamped with the replay's clock.
    from pipeline.write_records import read_write_records

    records = read_write_records(Settings(data_dir=settings.data_dir / "replay" / summary["config"]["name"] / "data"))
    pushes = records[records["kind"] == "push"]
    assert set(pushes["view"]) == {"weather_hourly", "origin_recent"} and pushes["ok"].all()
    assert (pushes["written_at"] == pushes["window_end"]).all() and (pushes["written_at"].dt.year == 2013).all()


def test_without_a_feed_the_days_weather_is_skewed_online(two_replays):
    """The counterpart of the push test: the nightly batch alone serves yesterday's weather
    (stale after 3 hours, so missing online), which monitoring reports as skew."""
    assert any(m["skew_features"] > 0 for m in two_replays[0]["monitoring"])


def test_event_feed_across_nights_serves_what_the_offline_join_sees(tmp_path_factory, raw_slice_dir, use_case):
    """The event feed on late_arrival_v3 across nights: the night loads every windowed event
    known up to midnight, and the feed resumes there. It resumed at the day's last request
    instead and pushed the events known before midnight a second time: the carrier's 24-hour
    mean arrival delay was served off for the next day (on 2013-01-31, 17% of flights), and
    monitoring, which took windowed views for on-demand ones, put it down to the request."""
    _, summary, check = feed_replay(tmp_path_factory, raw_slice_dir, use_case, "events", "late_arrival_v3", 28)
    assert summary["last_day"] == "2013-01-31"
    assert check["skew_features"] == 0 and check["causes"] == {}, f"served features differ from the offline join: {check}"
