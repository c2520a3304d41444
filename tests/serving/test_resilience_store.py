"""A damaged packed online store is refused, not served: found at start (SQLite's integrity
check, every row against its view and contract), in readiness when the file changed, and
on a read that meets bytes that do not parse; the answer names the file and how to rebuild
it, and a rebuilt store is served again without a restart."""

from __future__ import annotations

import random
import sqlite3

import pytest

from serving.app import create_app
from tests.serving.helpers import flights_after_serve_end, query_string, request_body, request_entity

pytestmark = pytest.mark.serving

TABLE = "flights_aircraft_packed"
REBUILD = "pipeline materialize --start 1970-01-01"


def aircraft_key(tailnum: str) -> bytes:
    from feast.value_type import ValueType

    from feast_plugins import packed_layout

    [key] = packed_layout.encode_entity_keys([("tailnum", ValueType.STRING, [tailnum])])
    return key


def rewrite_row(data_dir, tailnum: str, change) -> None:
    """Replace one aircraft's row: ``change(event_ts, packed) -> (event_ts, packed)``."""
    with sqlite3.connect(data_dir / "online_store.db") as conn:
        key = aircraft_key(tailnum)
        [(ts, packed)] = conn.execute(f"SELECT event_ts, packed FROM {TABLE} WHERE entity_key = ?", [key])
        ts, packed = change(ts, packed)
        conn.execute(f"UPDATE {TABLE} SET event_ts = ?, packed = ? WHERE entity_key = ?", [ts, packed, key])
    conn.close()


def null_departures(data_dir) -> None:
    """One route's ``departures_1d`` turned null (its contract allows no null)."""
    from feast_plugins import packed_layout

    table = "flights_route_daily_packed"
    with sqlite3.connect(data_dir / "online_store.db") as conn:
        [(key, packed)] = conn.execute(f"SELECT entity_key, packed FROM {table} LIMIT 1")
        values = packed_layout.unpack(packed)
        values["departures_1d"].Clear()
        conn.execute(f"UPDATE {table} SET packed = ? WHERE entity_key = ?", [packed_layout.pack(values), key])
    conn.close()


def seats(value: int):
    def change(ts, packed):
        from feast_plugins import packed_layout

        values = packed_layout.unpack(packed)
        values["seats"].int64_val = value
        return ts, packed_layout.pack(values)
    return change


def damage_a_page(data_dir) -> None:
    """Random bytes over the header of the file's last b-tree page (a disk's bad luck)."""
    path = data_dir / "online_store.db"
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    start = len(data) - page
    data[start:start + 12] = random.Random(4).randbytes(12)
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    # one aircraft's seats 189 -> 4285: outside the aircraft contract's range [1, 1000]
    "value_out_of_contract": lambda d, t: rewrite_row(d, t, seats(4285)),
    # a value turned null where the view's contract allows none
    "null_where_forbidden": lambda d, t: null_departures(d),
    # one bit of a feature name: "seats" -> "seaus", its value read as missing
    "feature_name_bit": lambda d, t: rewrite_row(d, t, lambda ts, p: (ts, p.replace(b"seats", b"seaus"))),
    # one high bit of the event time: decades ahead, every value of the row read as not yet known
    "event_time_bit": lambda d, t: rewrite_row(d, t, lambda ts, p: (ts | (1 << 55), p)),
    # bytes that do not parse as the packed values
    "unparseable_row": lambda d, t: rewrite_row(d, t, lambda ts, p: (ts, p[:-4] + b"\xff\xff\xff\xff")),
    "damaged_page": lambda d, t: damage_a_page(d),
}


def assert_refused(response, what: str) -> None:
    """503; ``/readyz`` says which file is damaged and how to rebuild it (other answers say
    only what is unavailable: details go to the log). Never blamed on the registry."""
    assert response.status_code == 503, (what, response.get_json())
    error = response.get_json()["error"]
    assert "registry" not in error, f"{what}: a damaged store is not the registry's fault: {error}"
    if what.startswith("/readyz"):
        assert "online_store.db" in error and "damaged" in error and REBUILD in error, (what, error)
        assert "/online_store.db" not in error, "answers name no absolute path"


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_damaged_store_is_refused_at_start_naming_the_file_and_the_rebuild(served_dir, use_case, corruption):
    flights = flights_after_serve_end(served_dir, use_case, 3)
    tailnum = next(t for t in flights["tailnum"] if isinstance(t, str))
    CORRUPTIONS[corruption](served_dir, tailnum)
    client = create_app({"DATA_DIR": served_dir}).test_client()
    assert_refused(client.get("/readyz"), f"/readyz ({corruption})")
    assert_refused(client.post("/predict", json=request_body(flights)), f"/predict ({corruption})")
    other = request_entity(next(flights.itertuples()))
    assert_refused(client.get("/features", query_string=query_string(other)), f"/features ({corruption})")
    assert client.get("/healthz").status_code == 200, "alive, though not ready"


def test_a_rebuilt_store_is_served_again_without_a_restart(served_dir, use_case):
    from tests.conftest import materialize_into

    flights = flights_after_serve_end(served_dir, use_case, 3)
    row = next(r for r in flights.itertuples() if isinstance(r.tailnum, str))
    client = create_app({"DATA_DIR": served_dir}).test_client()
    query = query_string(request_entity(row))
    good = client.get("/features", query_string=query).get_json()["features"]["aircraft__seats"]
    rewrite_row(served_dir, row.tailnum, seats(4285))
    assert_refused(client.get("/readyz"), "/readyz after the file changed")
    assert_refused(client.get("/features", query_string=query), "/features")
    materialize_into(client.application.extensions["serving"].config.settings)  # the rebuild the answer names
    assert client.get("/readyz").status_code == 200
    answer = client.get("/features", query_string=query)
    assert answer.status_code == 200 and answer.get_json()["features"]["aircraft__seats"] == good


def test_bytes_that_do_not_parse_on_a_read_refuse_the_store(served_dir, use_case):
    """Found by a request before readiness looked: the store is refused from then on,
    and the answer blames the store, not the registry."""
    flights = flights_after_serve_end(served_dir, use_case, 3)
    row = next(r for r in flights.itertuples() if isinstance(r.tailnum, str))
    client = create_app({"DATA_DIR": served_dir}).test_client()
    assert client.post("/predict", json=request_body(flights)).status_code == 200
    CORRUPTIONS["unparseable_row"](served_dir, row.tailnum)
    assert_refused(client.get("/features", query_string=query_string(request_entity(row))), "/features")
    assert_refused(client.post("/predict", json=request_body(flights)), "/predict of the same flights")
    assert_refused(client.get("/readyz"), "/readyz")
