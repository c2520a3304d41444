"""`monitoring`: skew, drift, freshness and quality of what was served, as a report.

`monitoring report` writes DATA_DIR/reports/monitoring/summary.json and report.html and
prints the alerts; it first compacts the served log (the server writes a small file per
flush; `--no-compact` reads them as they are). `monitoring compact` only compacts.
Exit codes: 0 no alert rule breached, 1 at least one breached (the rules: the use case's
feature_repo/monitoring.toml), 2 the report could not be made.
Heavy imports happen inside the command: --help is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.entry import context, instant, parse, run
from core.errors import EXIT_ALERT, EXIT_OK


def cmd_report(args) -> int:
    settings, use_case = context()  # bad settings fail before the seconds of importing Feast

    from feast_plugins.store import feature_store
    from monitoring.config import RULES_FILE, load_rules
    from monitoring.monitor import run_monitoring, write_summary

    rules = load_rules(args.rules or settings.feature_repo / RULES_FILE)
    if args.compact:
        _compact(settings, use_case)
    summary = run_monitoring(settings, use_case, feature_store(settings), rules, start=args.start, end=args.end,
                             recent_since=args.recent_since, at=args.at)
    paths = write_summary(settings, summary)
    if args.json:
        print(json.dumps({"alerts": summary["alerts"], **{k: str(v) for k, v in paths.items()}}, indent=2))
    else:
        print(render_text(summary))
        print(f"report: {paths['html']}\nsummary: {paths['json']}")
    return EXIT_ALERT if summary["alerts"] else EXIT_OK


def _compact(settings, use_case) -> dict:
    from monitoring.servedlog import compact_served_log

    return compact_served_log(settings.logs / "served", use_case.event_timestamp,
                              say=lambda line: print(line, file=sys.stderr))


def cmd_compact(args) -> int:
    settings, use_case = context()
    out = _compact(settings, use_case)
    if not out["files_in"]:
        print(f"served log {settings.logs / 'served'}: nothing to compact", file=sys.stderr)
    return EXIT_OK


def render_text(summary: dict) -> str:
    """The few lines a person reads in a terminal: counts per section, then each alert."""
    skew = summary["skew"]
    mismatched = sum(1 for s in skew.values() if s["mismatches"])
    drift = summary.get("drift") or {}
    views = summary["freshness"]["views"]
    quality = summary.get("quality") or {}
    overall = quality.get("overall") or {}
    lines = [
        f"monitoring at {summary['at']}: {summary['log']['rows']} served rows, model {summary['model']['version']}",
        f"  skew: {mismatched} of {len(skew)} features with mismatches",
        "  causes: " + (", ".join(f"{f['cause']} {f['values']}" for f in (summary.get("causes") or {})
                                  .get("findings", [])) or "none"),
        f"  drift vs training (PSI > {summary['rules']['psi_max']}): "
        f"{', '.join(drift.get('vs_training_drifted', {})) or 'none'}",
        f"  drift recent vs earlier: {', '.join((drift.get('recent_vs_earlier') or {}).get('drifted', {})) or 'none'}",
        f"  stale views: {', '.join(v for v, f in views.items() if f['stale']) or 'none'}",
        f"  quality: {quality.get('rows', 0)} labelled predictions"
        + (f", AUC {overall['auc']:.3f}, log loss {overall['log_loss']:.3f}" if overall.get("auc") else ""),
    ]
    alerts = summary["alerts"]
    lines.append(f"{len(alerts)} alert(s)" if alerts else "no alerts")
    lines += [f"  ALERT [{a['rule']}] {a['subject']}: {a['message']}" for a in alerts]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="write the monitoring report; exit 1 when an alert rule is breached")
    report.add_argument("--start", type=instant, help="only requests at or after this instant (request time)")
    report.add_argument("--end", type=instant, help="only requests before this instant (request time)")
    report.add_argument("--recent-since", type=instant,
                        help="split served traffic here (serving time) for recent-vs-earlier drift "
                             "(default: the start of the last serving day, when there are several)")
    report.add_argument("--at", type=instant,
                        help="judge freshness at this instant (default: the newest served request time)")
    report.add_argument("--rules", type=Path,
                        help="alert rules (TOML; default: the use case's feature_repo/monitoring.toml)")
    report.add_argument("--json", action="store_true", help="print the alerts and paths as JSON")
    report.add_argument("--no-compact", dest="compact", action="store_false",
                        help="read the served log's files as they are (default: compact them first)")
    report.set_defaults(func=cmd_report)
    compact = sub.add_parser("compact", help="merge the served log's small files into one per day (same rows)")
    compact.set_defaults(func=cmd_compact)
    return parser


def main(argv=None) -> int:
    return run(parse(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
