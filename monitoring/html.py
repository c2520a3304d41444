"""The monitoring report as one self-contained HTML page: causes and alerts first, then
consistency with the served value age and write lag per view, drift, freshness and
quality, each with its table and plot (matplotlib PNGs inlined as data URIs).

Each plot is an ``<img class="plot" id=...>`` that marks itself ``data-rendered`` with its
decoded width once the browser has drawn it (the headless-Chromium test reads that back).
"""

from __future__ import annotations

import base64
import html
import io

from matplotlib.figure import Figure

from training.evaluate import MIN_SLICE_ROWS

PLOT_IDS = ("plot-drift", "plot-distributions", "plot-drift-over-time", "plot-quality-over-time",
            "plot-freshness", "plot-causes", "plot-consistency", "plot-age-lag")
_TOP = 6


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _img(plot_id: str, fig: Figure, alt: str) -> str:
    return (f'<img class="plot" id="{plot_id}" alt="{html.escape(alt)}" '
            f'onload="this.dataset.rendered = this.naturalWidth" src="data:image/png;base64,{_png(fig)}">')


def _empty(plot_id: str, why: str) -> str:
    fig = Figure(figsize=(6, 1))
    fig.text(0.5, 0.5, why, ha="center", va="center")
    return _img(plot_id, fig, why)


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(name: str) -> str:
    return name.split("__", 1)[-1] if "__" in name else name


def _top_drift(drift: dict) -> list[str]:
    values = {c: v for c, v in drift["vs_training"].items() if v is not None}
    recent = {c: v for c, v in drift["recent_vs_earlier"].get("psi", {}).items() if v is not None}
    ranked = sorted(values, key=lambda c: -max(values[c], recent.get(c, 0)))
    return ranked[:_TOP]


def _recent_text(recent: dict) -> str:
    if recent.get("since") is None:
        return f"Recent vs earlier served traffic: not compared ({html.escape(recent['note'])})."
    moved = ", ".join(f"{c} {v}" for c, v in recent.get("drifted", {}).items()) or "none"
    note = f" ({recent['note']})" if recent.get("note") else ""
    return (f"Recent (served since {html.escape(recent['since'])}, {recent['recent_rows']} rows) vs earlier "
            f"({recent['earlier_rows']} rows), above the threshold: {html.escape(moved + note)}.")


def drift_plot(drift: dict) -> str:
    columns = list(drift["vs_training"])
    fig = Figure(figsize=(10, 0.25 * len(columns) + 1.5))
    ax = fig.subplots()
    train = [drift["vs_training"][c] or 0 for c in columns]
    recent = [drift["recent_vs_earlier"].get("psi", {}).get(c) or 0 for c in columns]
    y = range(len(columns))
    ax.barh([i + 0.2 for i in y], train, height=0.4, label="served vs training")
    if any(recent):
        ax.barh([i - 0.2 for i in y], recent, height=0.4, label="recent vs earlier served")
    ax.axvline(drift["psi_max"], color="red", linestyle="--", label=f"alert at PSI {drift['psi_max']}")
    ax.set_yticks(list(y), columns, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("PSI")
    ax.legend(loc="lower right", fontsize=8)
    return _img("plot-drift", fig, "PSI per feature")


def distributions_plot(distributions: dict, columns: list[str]) -> str:
    columns = [*columns, "probability"]
    fig = Figure(figsize=(12, 2.4 * ((len(columns) + 2) // 3)))
    axes = fig.subplots((len(columns) + 2) // 3, 3, squeeze=False).ravel()
    for ax, column in zip(axes, columns):
        d = distributions[column]
        bins = range(len(d["training"]))
        ax.bar([b - 0.2 for b in bins], d["training"], width=0.4, label="training")
        ax.bar([b + 0.2 for b in bins], d["served"], width=0.4, label="served")
        labels = ([f"≤{e:.3g}" for e in d["edges"]] + [">", "null"]) if d["kind"] == "numeric" else None
        if labels and len(labels) == len(d["training"]):
            ax.set_xticks(list(bins), labels, fontsize=6, rotation=45)
        ax.set_title(column, fontsize=8)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _img("plot-distributions", fig, "share of rows per reference bin, training vs served")


def drift_over_time_plot(drift: dict, columns: list[str]) -> str:
    days = list(drift["by_day"])
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    for column in [*columns, "probability"]:
        ax.plot(days, [drift["by_day"][d].get(column) for d in days], marker="o", label=_short(column))
    ax.axhline(drift["psi_max"], color="red", linestyle="--")
    ax.set_ylabel("PSI vs training")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7, ncol=2)
    return _img("plot-drift-over-time", fig, "PSI against the training set per request day")


def quality_over_time_plot(quality: dict) -> str:
    days = list(quality["by_day"])
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    for metric in ("auc", "log_loss", "brier"):
        ax.plot(days, [quality["by_day"][d][metric] for d in days], marker="o", label=metric)
    ax.plot(days, [quality["by_day"][d]["positive_rate"] for d in days], linestyle=":", label="observed rate")
    ax.plot(days, [quality["by_day"][d]["mean_prediction"] for d in days], linestyle=":", label="mean prediction")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7, ncol=3)
    return _img("plot-quality-over-time", fig, "quality of logged predictions per request day")


def freshness_plot(views: dict) -> str:
    # Views without a TTL never go stale (aircraft rows sit at the epoch): their age would
    # only stretch the axis, so they stay in the table.
    names = [n for n in views if views[n]["ttl_hours"]]
    if not names:
        return _empty("plot-freshness", "no feature view has a TTL")
    fig = Figure(figsize=(8, 0.4 * len(names) + 1.2))
    ax = fig.subplots()
    ages = [views[n]["age_hours"] or 0 for n in names]
    colors = ["tab:red" if views[n]["stale"] else "tab:green" for n in names]
    ax.barh(names, ages, color=colors, label="age of newest online value")
    ttl = [(i, views[n]["ttl_hours"]) for i, n in enumerate(names)]
    ax.scatter([t for _, t in ttl], [i for i, _ in ttl], marker="|", s=400, color="black", label="TTL")
    ax.set_xlabel("hours")
    ax.legend(fontsize=7)
    return _img("plot-freshness", fig, "age of the newest materialized value per view with a TTL, against it")


def causes_plot(findings: list[dict]) -> str:
    """Mismatching values per cause, stacked by feature view."""
    if not findings:
        return _empty("plot-causes", "no mismatch: nothing to attribute")
    views = sorted({v for f in findings for v in f["views"]})
    fig = Figure(figsize=(9, 0.45 * len(findings) + 1.4))
    ax = fig.subplots()
    names = [f["cause"] for f in findings]
    left = [0] * len(findings)
    for view in views:
        counts = [f["views"].get(view, 0) for f in findings]
        ax.barh(names, counts, left=left, label=view)
        left = [a + b for a, b in zip(left, counts)]
    ax.invert_yaxis()
    ax.set_xlabel("mismatching served values")
    ax.legend(fontsize=7, loc="lower right")
    return _img("plot-causes", fig, "mismatching served values per cause, by feature view")


def consistency_plot(consistency: dict) -> str:
    """Per request day: the share of served values matching exactly, and of each kind of
    mismatch."""
    days = list(consistency["by_day"])
    if not days:
        return _empty("plot-consistency", "no served traffic in the window")
    fig = Figure(figsize=(10, 3.5))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    ax.plot(days, [consistency["by_day"][d]["exact_rate"] for d in days], marker="o", label="exact match")
    ax.set_ylabel("share of served values")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    if len(days) > 20:
        ax.set_xticks(days[::max(1, len(days) // 12)])
    ax.legend(fontsize=7)
    worst = sorted(consistency["features"].items(), key=lambda kv: kv[1]["exact_rate"] or 1.0)[:_TOP]
    names = [_short(f) for f, _ in worst]
    left = [0.0] * len(worst)
    for kind in ("missing", "extra", "differ"):
        shares = [m[f"{kind}_rate"] or 0.0 for _, m in worst]
        ax2.barh(names, shares, left=left, label=kind)
        left = [a + b for a, b in zip(left, shares)]
    ax2.invert_yaxis()
    ax2.set_xlabel("share of rows mismatching (least consistent features)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _img("plot-consistency", fig, "exact-match rate per request day; mismatch kinds of the least "
                                         "consistent features")


def _causes_section(summary: dict) -> list[str]:
    causes = summary.get("causes")
    skipped = summary["log"].get("skipped_files") or []
    parts = ['<h2 id="causes">Causes of mismatches</h2>']
    if skipped:
        parts.append(f'<p class="alert" id="skipped-files">{len(skipped)} served-log file(s) skipped as '
                     f"unreadable (their rows are not in this report):</p>")
        parts.append(_table(skipped, ["file", "error"]))
    if not causes:
        parts.append("<p>No served traffic in the window.</p>")
        parts.append(_empty("plot-causes", "no served traffic in the window"))
        return parts
    found = causes["findings"]
    cells = summary["consistency"]["overall"]["cells"]
    parts.append(f"<p>{causes['mismatches']} of {cells} served values differ from the offline point-in-time "
                 f"value; {len(found)} cause(s), {causes['unexplained']} value(s) unexplained. One finding per "
                 f"cause, however many features it touches.</p>")
    rows = []
    for f in found:
        by = f["by"]
        rows.append({"cause": f["cause"], "meaning": f["title"], "values": f["values"], "rows": f["rows"],
                     "features": f"{len(f['features'])}: {', '.join(_short(x) for x in list(f['features'])[:6])}"
                                 + (" …" if len(f["features"]) > 6 else ""),
                     "views": ", ".join(f"{v} ({n})" for v, n in f["views"].items()),
                     "how much": f"{by['what']} {by['p50_hours']} h p50, {by['max_hours']} h max" if by else None,
                     "example": f["examples"][0] if f["examples"] else None})
    parts.append(_table(rows, ["cause", "meaning", "values", "rows", "features", "views", "how much", "example"]))
    parts.append(causes_plot(found))
    return parts


def _consistency_section(summary: dict) -> list[str]:
    c = summary.get("consistency")
    parts = ["<h2>Consistency: served vs offline point-in-time values</h2>"]
    if not c:
        return [*parts, "<p>No served traffic in the window.</p>",
                _empty("plot-consistency", "no served traffic in the window")]
    o = c["overall"]
    parts.append(f"<p>{o['cells']} served values ({o['rows']} rows x {o['features']} features): exact "
                 f"{_fmt(o['exact_rate'])}, missing (served null, offline present) {_fmt(o['missing_rate'])}, "
                 f"extra (served present, offline null) {_fmt(o['extra_rate'])}, different "
                 f"{_fmt(o['differ_rate'])}.</p>")
    parts.append(consistency_plot(c))
    rows = [{"feature": f, **{k: m[k] for k in ("rows", "exact_rate", "missing", "extra", "differ", "smape")},
             "difference p01/p50/p99": (" / ".join(f"{v:.4g}" for v in m["difference_quantiles"].values())
                                        if m["difference_quantiles"] else None)}
            for f, m in c["features"].items() if m["exact"] < m["rows"]]
    parts.append(_table(rows, ["feature", "rows", "exact_rate", "missing", "extra", "differ", "smape",
                               "difference p01/p50/p99"]))
    for column, groups in c["by_slice"].items():
        worst = sorted(groups.items(), key=lambda kv: kv[1]["exact_rate"] or 1.0)[:10]
        parts.append(f"<h3>By {html.escape(column)} (least consistent first)</h3>")
        parts.append(_table([{column: k, "rows": g["rows"], "exact_rate": g["exact_rate"],
                              "features with mismatches": len(g["features"])} for k, g in worst],
                            [column, "rows", "exact_rate", "features with mismatches"]))
    return parts


def _hours_of(seconds) -> float | None:
    return None if seconds is None else round(seconds / 3600, 3)


def age_lag_plot(served_age: dict, write_lag: dict) -> str:
    """Per view: the served values' age (p50, p99) against its objective, and the write lag
    (p50, p99), in hours on a log axis (minutes to days side by side)."""
    aged = [v for v, a in served_age.items() if a.get("p99_seconds") is not None]
    lagged = [v for v, w in write_lag.items() if w.get("lag_p99_seconds") is not None]
    if not aged and not lagged:
        return _empty("plot-age-lag", "no served value age or write lag recorded in the window")
    fig = Figure(figsize=(11, 0.4 * max(len(aged), len(lagged), 1) + 1.6))
    ax, ax2 = fig.subplots(1, 2)

    def bars(axis, names, rows, keys, title):
        y = range(len(names))
        for offset, (key, label) in zip((0.2, -0.2), keys):
            # A zero age or lag has no place on a log axis: drawn at one second.
            axis.barh([i + offset for i in y], [max(rows[n][key] or 0.0, 1.0) / 3600 for n in names], height=0.4,
                      label=label)
        axis.set_yticks(list(y), names, fontsize=7)
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.set_xlabel("hours")
        axis.set_title(title, fontsize=9)

    if aged:
        bars(ax, aged, served_age, (("p50_seconds", "p50"), ("p99_seconds", "p99")), "served value age")
        goals = [(i, served_age[n]["objective_seconds"] / 3600) for i, n in enumerate(aged)
                 if served_age[n].get("objective_seconds")]
        if goals:
            ax.scatter([g for _, g in goals], [i for i, _ in goals], marker="|", s=400, color="black",
                       label="objective (p99)", zorder=3)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no served value age", ha="center", va="center", transform=ax.transAxes)
    if lagged:
        bars(ax2, lagged, write_lag, (("lag_p50_seconds", "p50"), ("lag_p99_seconds", "p99")),
             "write lag (known to servable)")
        ax2.legend(fontsize=7)
    else:
        ax2.text(0.5, 0.5, "no write records", ha="center", va="center", transform=ax2.transAxes)
    fig.tight_layout()
    return _img("plot-age-lag", fig, "served value age and write lag per feature view (p50, p99)")


def _age_lag_section(summary: dict) -> list[str]:
    """Beside the consistency: how old the served values were per view (against each
    view's objective) and how late each view's writes made values servable."""
    f = summary.get("freshness") or {}
    served_age = f.get("served_age") or {}
    lag = f.get("write_lag") or {}
    views = lag.get("views") or {}
    parts = ['<h3 id="age-lag">Served value age and write lag per view</h3>',
             "<p>Age: request time minus the served value's event time (feature log). Write lag: from a value "
             f"becoming known to it being servable online ({lag.get('records', 0)} write record(s)"
             + (f", {len(lag['skipped_lines'])} unreadable line(s) skipped" if lag.get("skipped_lines") else "")
             + ").</p>"]
    parts.append(_table([{"view": v, "values": a["values"], "p50 h": _hours_of(a["p50_seconds"]),
                          "p99 h": _hours_of(a["p99_seconds"]), "max h": _hours_of(a["max_seconds"]),
                          "objective h": _hours_of(a["objective_seconds"]), "breached": a["breached"]}
                         for v, a in served_age.items()],
                        ["view", "values", "p50 h", "p99 h", "max h", "objective h", "breached"]))
    parts.append(_table([{"view": v, "writes": w["writes"], "failed": w["failed"],
                          "lag p50 h": _hours_of(w["lag_p50_seconds"]), "lag p99 h": _hours_of(w["lag_p99_seconds"]),
                          "lag max h": _hours_of(w["lag_max_seconds"]),
                          "last failure": (f"{w['last_failure']['written_at']} {w['last_failure']['kind']}: "
                                           f"{w['last_failure']['error']}" if w.get("last_failure") else None)}
                         for v, w in views.items()],
                        ["view", "writes", "failed", "lag p50 h", "lag p99 h", "lag max h", "last failure"]))
    parts.append(age_lag_plot(served_age, views))
    return parts


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
.alert{color:#a00}.ok{color:#070}img.plot{max-width:100%;display:block;margin:.5em 0}"""


def render_html(summary: dict) -> str:
    """The whole page for one monitoring summary."""
    alerts = summary["alerts"]
    parts = [f"<h1>Monitoring report</h1><p>Judged at {html.escape(summary['at'])} (newest served request); "
             f"generated {html.escape(summary['generated_at'])}. Served rows: {summary['log']['rows']} in "
             f"{summary['log']['requests']} requests, model(s) "
             f"{html.escape(', '.join(summary['log']['model_versions']) or '—')}.</p>"]
    status = (f'<p class="alert" id="status">{len(alerts)} alert(s)</p>' if alerts
              else '<p class="ok" id="status">no alerts</p>')
    parts += _causes_section(summary)
    parts += ["<h2>Alerts</h2>", status, _table(alerts, ["rule", "subject", "value", "limit", "message"])]
    parts += _consistency_section(summary)
    parts += _age_lag_section(summary)

    drift = summary.get("drift")
    parts.append("<h2>Drift (PSI)</h2>")
    if drift:
        recent = drift["recent_vs_earlier"]
        parts.append(f"<p>Reference: training window {html.escape(str(drift['reference_window']['start']))} – "
                     f"{html.escape(str(drift['reference_window']['end']))} ({drift['reference_rows']} rows). "
                     f"Above {drift['psi_max']} against training: "
                     f"{html.escape(', '.join(f'{c} {v}' for c, v in drift['vs_training_drifted'].items()) or 'none')}."
                     f" {_recent_text(recent)}</p>")
        top = _top_drift(drift)
        parts += [drift_plot(drift), "<h3>Distributions (most moved features, and the predictions)</h3>",
                  distributions_plot(summary["distributions"], top),
                  "<h3>Drift over time</h3>", drift_over_time_plot(drift, top[:4])]
    else:
        parts += [_empty(i, "no served traffic in the window") for i in PLOT_IDS[:3]]

    parts.append("<h2>Freshness and age</h2>")
    views = summary["freshness"]["views"]
    parts.append(_table([{"view": v, **f} for v, f in views.items()],
                        ["view", "materialized_until", "newest_online_value", "age_hours", "ttl_hours", "stale",
                         "materialization_lag_hours"]))
    parts.append(freshness_plot(views))
    model = summary["model"]
    parts.append(f"<p>Model {html.escape(model['version'])}: trained {html.escape(model['trained_at'])} "
                 f"({model['wall_clock_age_days']} days ago) on data up to "
                 f"{html.escape(model['training_window_end'])}, {model['data_age_days']} days before the newest "
                 f"served request.</p>")
    stale = summary["freshness"]["served_stale_rate"]
    stale_text = ", ".join(f"{_short(f)} {r:.1%}" for f, r in stale.items()) or "none"
    parts.append(f"<p>Share of served rows with a feature dropped as older than its TTL: "
                 f"{html.escape(stale_text)}.</p>")

    parts.append("<h2>Quality (logged predictions with labels)</h2>")
    quality = summary.get("quality")
    if quality and quality["rows"]:
        overall = quality["overall"]
        parts.append(f"<p>{quality['rows']} labelled predictions: AUC {_fmt(overall['auc'])}, log loss "
                     f"{_fmt(overall['log_loss'])}, Brier {_fmt(overall['brier'])}, observed rate "
                     f"{_fmt(overall['positive_rate'])} vs mean prediction {_fmt(overall['mean_prediction'])}, "
                     f"ECE {_fmt(quality['calibration']['ece'])}.</p>")
        parts.append(quality_over_time_plot(quality))
        parts.append(_table([{"day": d, **m} for d, m in quality["by_day"].items()],
                            ["day", "rows", "auc", "log_loss", "brier", "positive_rate", "mean_prediction"]))
        for column, values in quality["slices"].items():
            parts.append(f"<h3>By {html.escape(column)} (values with {MIN_SLICE_ROWS}+ labelled rows)</h3>")
            parts.append(_table([{column: v, **m} for v, m in values.items()],
                                [column, "rows", "auc", "log_loss", "positive_rate", "mean_prediction"]))
        parts.append("<h3>Calibration</h3>")
        parts.append(_table(quality["calibration"]["bins"], ["bin", "rows", "mean_prediction", "observed_rate"]))
    else:
        parts.append("<p>No logged prediction has a label yet.</p>")
        parts.append(_empty("plot-quality-over-time", "no labelled predictions yet"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Monitoring report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")
