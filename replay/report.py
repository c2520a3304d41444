"""The replay's numbers: per week and overall, JSON and an HTML page, and a conclusion
whose every claim is computed from those numbers."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.files import atomic_write
from core.settings import Settings
from replay.config import BATCH
from training.evaluate import calibration, holdout_metrics

#: Keys whose values are wall-clock measurements: they differ between identical runs.
TIMING_KEYS = ("seconds", "latency_ms", "timing", "generated_at", "rows_per_second")


def quality(y: np.ndarray, p: np.ndarray) -> dict:
    """AUC, log loss, Brier and calibration error of predictions ``p`` for labels ``y``."""
    ok = np.isfinite(p)
    y, p = y[ok], p[ok]
    if len(y) == 0:
        return {"rows": 0, "auc": None, "log_loss": None, "brier": None, "ece": None}
    m = holdout_metrics(y, p)
    return {"rows": m["rows"], "auc": _r(m["auc"]), "log_loss": _r(m["log_loss"]), "brier": _r(m["brier"]),
            "ece": _r(calibration(y, p)["ece"]), "positive_rate": _r(m["positive_rate"]),
            "mean_prediction": _r(m["mean_prediction"])}


def _r(value, digits: int = 6):
    return None if value is None else round(float(value), digits)


def _latency(seconds: pd.Series) -> dict:
    if seconds.empty:
        return {"requests": 0, "p50": None, "p99": None}
    ms = seconds.to_numpy() * 1000
    return {"requests": int(len(ms)), "p50": _r(np.percentile(ms, 50), 3), "p99": _r(np.percentile(ms, 99), 3)}


def _answers(rows: pd.DataFrame, latencies: pd.DataFrame) -> dict:
    """Quality of dynamic and static inference on ``rows`` (static, and dynamic again, on
    the events both answered) and client-side latency per kind of inference."""
    both = rows[np.isfinite(rows["dynamic"]) & np.isfinite(rows["static"])]
    y_both = both["label"].to_numpy(float)
    return {
        "dynamic": quality(rows["label"].to_numpy(float), rows["dynamic"].to_numpy(float)),
        "static": quality(y_both, both["static"].to_numpy(float)),
        "dynamic_on_same_events": quality(y_both, both["dynamic"].to_numpy(float)),
        "latency_ms": {kind: _latency(latencies[latencies["endpoint"] == kind]["seconds"])
                       for kind in ("dynamic", "static")},
    }


def summarize(replay, n_days: int, first_day, total_seconds: float) -> dict:
    """The replay's report (``docs/replay.md`` describes it)."""
    served = pd.concat(replay.served, ignore_index=True) if replay.served else pd.DataFrame(
        columns=["id", "day", "week", "label", "dynamic", "static", "dynamic_model", "static_model"])
    latencies = pd.DataFrame(replay.latencies, columns=["week", "endpoint", "seconds", "rows"])
    retrains = replay.retrains
    weeks = []
    for week in sorted(set(served["week"]) | set(replay.clock.weekly)):
        rows = served[served["week"] == week]
        nights = [r for r in retrains if r.get("week") == week]
        weeks.append({
            "week": int(week),
            "from": rows["day"].min() if len(rows) else None, "to": rows["day"].max() if len(rows) else None,
            "events": int(len(rows)),
            **_answers(rows, latencies[latencies["week"] == week]),
            "models_served": sorted(set(rows["dynamic_model"].dropna())),
            "retrains": len(nights), "promotions": sum(1 for r in nights if r["promoted"]),
            "rows_ingested": int(replay.rows_ingested.get(week, 0)),
            "training_rows": int(sum(r.get("train_rows", 0) for r in nights)),
            "seconds": {k: round(v, 3) for k, v in sorted(replay.clock.weekly.get(week, {}).items())},
        })
    both = served[np.isfinite(served["dynamic"]) & np.isfinite(served["static"])]
    same = both["dynamic"].to_numpy(float) - both["static"].to_numpy(float)
    stages = {k: round(v, 3) for k, v in sorted(replay.clock.total.items())}
    summary = {
        "config": replay.config.public(),
        "use_case": replay.use_case.name,
        "served_days": n_days, "first_day": first_day.isoformat(),
        "last_day": served["day"].max() if len(served) else None,
        "events": int(len(served)),
        "errors": replay.errors,
        "overall": {
            **_answers(served, latencies),
            "same_events": int(len(both)),
            "identical_predictions": int((np.abs(same) < 1e-12).sum()),
            "mean_abs_difference": _r(np.abs(same).mean()) if len(same) else None,
        },
        "retrains": retrains,
        "promotions": sum(1 for r in retrains if r["promoted"]),
        "rejections": sum(1 for r in retrains if not r["promoted"]),
        "alerts": replay.alerts,
        "monitoring": replay.monitoring,
        "refusals": replay.refusals,
        "weeks": weeks,
        "timing": {"total_seconds": round(total_seconds, 3), "stages_seconds": stages,
                   "per_served_day_seconds": round(total_seconds / max(n_days, 1), 4),
                   "rows_per_second": round(len(served) / total_seconds, 1) if total_seconds else None},
    }
    summary["conclusion"] = conclusion(summary)
    summary["conclusion_timing"] = conclusion_timing(summary)
    return summary


def strip_timings(value):
    """The report without wall-clock measurements (what must be equal between two runs)."""
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items()
                if not any(t in k for t in TIMING_KEYS) and k != "paths"}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def conclusion(summary: dict) -> list[str]:
    """Sentences computed from the numbers of one policy's replay."""
    out = []
    policy = summary["config"]["name"]
    o = summary["overall"]
    weekly_auc = [w["dynamic"]["auc"] for w in summary["weeks"] if w["dynamic"]["auc"] is not None]
    if o["dynamic"]["auc"] is not None:
        out.append(f"{policy}: over {summary['served_days']} served days ({summary['events']:,} events) the "
                   f"served model reached AUC {o['dynamic']['auc']:.3f}, log loss {o['dynamic']['log_loss']:.3f}, "
                   f"ECE {o['dynamic']['ece']:.3f}; weekly AUC ranged {min(weekly_auc):.3f}-{max(weekly_auc):.3f}.")
    if len(weekly_auc) >= 4:
        half = len(weekly_auc) // 2
        first, second = _mean(weekly_auc[:half]), _mean(weekly_auc[half:])
        trend = "fell" if second < first - 0.005 else "rose" if second > first + 0.005 else "held"
        out.append(f"Mean weekly AUC {trend}: {first:.3f} in the first half of the weeks, {second:.3f} in the second.")
    out.append(f"Retrains: {len(summary['retrains'])}, promoted {summary['promotions']}, "
               f"rejected by the model gate or the training gate {summary['rejections']}.")
    if o["same_events"]:
        d, s = o["dynamic_on_same_events"], o["static"]
        if d["auc"] is not None and s["auc"] is not None:
            gap = d["auc"] - s["auc"]
            verdict = ("dynamic inference was better" if gap > 0.001 else
                       "static inference was better" if gap < -0.001 else "the two were equally good")
            out.append(f"On the same {o['same_events']:,} events, {verdict}: AUC {d['auc']:.3f} (dynamic) vs "
                       f"{s['auc']:.3f} (static, scored the night before); "
                       f"{o['identical_predictions'] / o['same_events']:.1%} of predictions were identical "
                       f"(mean absolute difference {o['mean_abs_difference']:.4f}).")
    rules = sorted({a["rule"] for a in summary["alerts"]})
    out.append(f"Monitoring ran {len(summary['monitoring'])} time(s) and raised {len(summary['alerts'])} alert(s)"
               + (f" ({', '.join(rules)})." if rules else "."))
    if summary["refusals"]:
        out.append(f"{len(summary['refusals'])} delivery(ies) refused by a data gate: "
                   + "; ".join(f"{r['night'][:10]} ({r['gate']})" for r in summary["refusals"][:5]) + ".")
    return out


def conclusion_timing(summary: dict) -> list[str]:
    """The sentences about wall time and latency (they differ between identical runs)."""
    out = []
    o = summary["overall"]
    lat = o["latency_ms"]
    if lat["dynamic"]["requests"] and lat["static"]["requests"]:
        out.append(f"Latency per request of up to {BATCH} entities, client side: "
                   f"dynamic p50 {lat['dynamic']['p50']:.1f} ms / "
                   f"p99 {lat['dynamic']['p99']:.1f} ms; static lookup p50 {lat['static']['p50']:.1f} ms / "
                   f"p99 {lat['static']['p99']:.1f} ms.")
    t = summary["timing"]
    top = sorted(t["stages_seconds"].items(), key=lambda kv: -kv[1])[:3]
    out.append(f"Wall time {t['total_seconds']:.0f} s ({t['per_served_day_seconds']:.2f} s per served day); "
               "most of it in " + ", ".join(f"{k} {v:.0f} s" for k, v in top) + ".")
    return out


def compare(summaries: dict[str, dict]) -> list[str]:
    """Sentences comparing the policies replayed over the same days."""
    rows = {p: s for p, s in summaries.items() if s["overall"]["dynamic"]["auc"] is not None}
    if len(rows) < 2:
        return []
    best = max(rows, key=lambda p: rows[p]["overall"]["dynamic"]["auc"])
    cheapest = min(rows, key=lambda p: rows[p]["timing"]["total_seconds"])
    parts = ", ".join(f"{p} {s['overall']['dynamic']['auc']:.3f} ({s['served_days']} days, "
                      f"{len(s['retrains'])} retrains, {s['timing']['total_seconds']:.0f} s)" for p, s in rows.items())
    return [f"AUC by policy: {parts}. Best: {best}; fastest: {cheapest}."]


def write_reports(settings: Settings, summary: dict) -> dict[str, Path]:
    """``<name>.json`` and ``report.html`` (every replay run so far) under
    ``DATA_DIR/reports/replay/``."""
    directory = settings.reports / "replay"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{summary['config']['name']}.json"
    atomic_write(path, json.dumps(summary, indent=2, allow_nan=False).encode())
    summaries = {}
    for p in sorted(directory.glob("*.json")):
        try:
            s = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(s, dict) and "config" in s and "weeks" in s:
            summaries[s["config"].get("name", s["config"]["policy"])] = s
    page = directory / "report.html"
    atomic_write(page, render_html(summaries).encode())
    return {"json": path, "html": page}


def _plot(title: str, ylabel: str, series: dict[str, list[tuple[int, float]]], plot_id: str) -> str:
    from matplotlib.figure import Figure

    from monitoring.html import _empty, _img

    if not any(series.values()):
        return _empty(plot_id, f"no {title.lower()} to plot")
    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    for name, points in series.items():
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=name,
                    linestyle="--" if name.endswith("static") else "-")
    ax.set_xlabel("replay week")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _img(plot_id, fig, title)


def _series(summaries: dict, pick) -> dict:
    out = {}
    for policy, s in summaries.items():
        for kind in ("dynamic", "static"):
            points = [(w["week"], pick(w, kind)) for w in s["weeks"] if pick(w, kind) is not None]
            out[f"{policy} {kind}"] = points
    return out


def render_html(summaries: dict[str, dict]) -> str:
    """One self-contained page: conclusions, the weekly plots and tables, per policy."""
    from monitoring.html import _table

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Replay report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "</style></head><body><h1>Replay: training and inference policies on the real history</h1>"]
    lines = compare(summaries) + [c for s in summaries.values()
                                  for c in s["conclusion"] + s.get("conclusion_timing", [])]
    parts.append("<h2>Conclusion</h2><ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in lines) + "</ul>")
    parts.append("<h2>Quality per week</h2>")
    parts.append(_plot("AUC per week", "AUC", _series(summaries, lambda w, k: w[k]["auc"]), "auc"))
    parts.append(_plot("Log loss per week", "log loss", _series(summaries, lambda w, k: w[k]["log_loss"]), "logloss"))
    parts.append(_plot("Calibration error (ECE) per week", "ECE", _series(summaries, lambda w, k: w[k]["ece"]), "ece"))
    parts.append("<h2>Cost per week</h2>")
    parts.append(_plot(f"Request latency p50 (client side, up to {BATCH} entities)", "ms",
                       _series(summaries, lambda w, k: w["latency_ms"][k]["p50"]), "latency"))
    parts.append(_plot("Replay wall time per week", "s", {p: [(w["week"], sum(w["seconds"].values()))
                                                                for w in s["weeks"]] for p, s in summaries.items()},
                       "walltime"))
    for policy, s in summaries.items():
        parts.append(f"<h2>{html.escape(policy)}</h2><p>{html.escape(json.dumps(s['config']))}</p>")
        rows = [{"week": w["week"], "from": w["from"], "events": w["events"],
                 "AUC dyn": w["dynamic"]["auc"], "AUC static": w["static"]["auc"],
                 "log loss dyn": w["dynamic"]["log_loss"], "ECE dyn": w["dynamic"]["ece"],
                 "retrains": w["retrains"], "promoted": w["promotions"], "rows ingested": w["rows_ingested"],
                 "train rows": w["training_rows"], "p50 ms dyn": w["latency_ms"]["dynamic"]["p50"],
                 "p99 ms dyn": w["latency_ms"]["dynamic"]["p99"], "p50 ms static": w["latency_ms"]["static"]["p50"],
                 "wall s": round(sum(w["seconds"].values()), 1)} for w in s["weeks"]]
        parts.append(_table(rows, list(rows[0]) if rows else []))
        parts.append("<h3>Retrains</h3>" + _table(
            [{k: r.get(k) for k in ("night", "reason", "version", "train_rows", "holdout_auc", "promoted",
                                    "train_seconds", "gate_seconds")} | {"failures": "; ".join(r["failures"])[:200]}
             for r in s["retrains"]],
            ["night", "reason", "version", "train_rows", "holdout_auc", "promoted", "train_seconds",
             "gate_seconds", "failures"]))
        parts.append("<h3>Alerts</h3>" + _table(s["alerts"][:200], ["night", "rule", "subject", "value", "limit"]))
        parts.append("<h3>Refused deliveries</h3>" + _table(
            [{"night": r["night"], "gate": r["gate"], "failures": "; ".join(r["failures"])[:300]}
             for r in s["refusals"]], ["night", "gate", "failures"]))
        parts.append("<h3>Where the time went (s)</h3>" + _table(
            [{"stage": k, "seconds": v} for k, v in sorted(s["timing"]["stages_seconds"].items(),
                                                          key=lambda kv: -kv[1])], ["stage", "seconds"]))
    parts.append("</body></html>")
    return "\n".join(parts)
