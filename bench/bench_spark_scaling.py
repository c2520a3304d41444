"""How the cluster profile's training-set join scales: the project's Spark store on the local
cluster with 1 and then 2 workers (1 core, 1 GiB each), on the real flights and on
synthetic entity sets (``bench_spark_store.py``'s join, files and fingerprints), with
DuckDB's ASOF store (the embedded profile) on the same machine as the anchor and the
reference for the cells.

For each worker count a cluster of that size is started under the data directory
(``core.cluster.up``) and stopped after its runs. Each join runs in a process of its own,
timed around ``get_historical_features(...).to_df()`` alone (the Spark session started
first). This machine has 2 cores: the driver, the workers and the master share them, so
the 2-worker cluster is the most this machine can show, not what more machines would.

    BENCH_DATA_DIR=<a DATA_DIR with the full sources built> .venv/bin/python bench/bench_spark_scaling.py \
        [--sizes real,1000000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cell_bar, run_isolated, say, write_result  # noqa: E402
from bench.bench_profiles import REAL, entity_file, prepare  # noqa: E402
from bench.bench_spark_store import apply_profile, variant  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=f"{REAL},1000000", help="entity sets: real and/or row counts")
    parser.add_argument("--workers", default="1,2", help="worker counts, one cluster each")
    args = parser.parse_args()
    from core.cluster import ClusterOptions, down, up

    sizes = [x if x == REAL else int(x) for x in args.sizes.split(",")]
    workers = [int(x) for x in args.workers.split(",")]
    root = os.environ.get("BENCH_DATA_DIR") or tempfile.mkdtemp(prefix="bench-spark-scaling-")
    if not (Path(root) / "sources" / "labelled_events.parquet").exists():
        run_isolated(prepare, root, "127.0.0.1:1")
    run_isolated(apply_profile, root, "embedded")
    rows, anchors = [], {}
    with cell_bar("spark scaling: cells", len(sizes) * (len(workers) + 1)) as bar:
        for size in sizes:  # the anchor and the reference cells, once per entity set
            out = run_isolated(variant, "duckdb", root, entity_file(root, size))
            anchors[size] = out["value"]
            rows.append({"case": _label(size), "variant": "duckdb (embedded)", "workers": None,
                         "join_s": out["value"]["join_s"], "peak_mib": round(out["peak_mib"]),
                         "fingerprint": out["value"]["fingerprint"]})
            say(rows[-1])
            bar.update(1)
        for count in workers:
            record = up(Path(root), ClusterOptions(workers=count, worker_cores=1, worker_memory="1g"), say=say)
            os.environ.update({"SPARK_MASTER": record["spark_master"], "REGISTRY_URL": record["registry_url"]})
            try:
                run_isolated(apply_profile, root, "spark")
                for size in sizes:
                    out = run_isolated(variant, "spark_pit", root, entity_file(root, size))
                    value = out["value"]
                    rows.append({"case": _label(size), "variant": "spark_pit", "workers": count,
                                 "join_s": value["join_s"], "peak_mib": round(out["peak_mib"]),
                                 "fingerprint": value["fingerprint"],
                                 "same_cells_as_duckdb": value["fingerprint"] == anchors[size]["fingerprint"],
                                 "vs_duckdb": round(value["join_s"] / anchors[size]["join_s"], 2)})
                    say(rows[-1])
                    bar.update(1)
            finally:
                down(Path(root), say=say)
    goals = []
    for size in sizes:
        by = {r["workers"]: r for r in rows if r["case"] == _label(size) and r["variant"] == "spark_pit"}
        if 1 in by and 2 in by:
            by[2]["speedup_vs_1_worker"] = round(by[1]["join_s"] / by[2]["join_s"], 2)
        goals.append({"goal": f"{_label(size)}: every cluster size gives DuckDB's cells",
                      "value": all(r["same_cells_as_duckdb"] for r in by.values()), "target": "True",
                      "met": all(r["same_cells_as_duckdb"] for r in by.values())})
    write_result("spark_scaling", "Training set (late_arrival_v1) with the project's Spark store on the local "
                 f"cluster with {args.workers} worker(s) of 1 core and 1 GiB, DuckDB's ASOF store as anchor and "
                 "reference cells; all on this 2-core machine", rows, goals)
    return 0


def _label(size) -> str:
    return "real flights" if size == REAL else f"synthetic {size:,}"


if __name__ == "__main__":
    raise SystemExit(main())
