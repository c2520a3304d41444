"""What a user reads from the commands (issue 18, item 1): no third-party noise (warnings
from other packages, Feast's own CLI prints), progress while the work runs (plain lines
when the output is not a terminal, as here), a last line saying what was done and where;
and everything third-party back with ``--verbose`` or VERBOSE=1.

The commands run as real processes on a private copy of the slice's DATA_DIR.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core import progress
from tests.conftest import copy_data_dir

ROOT = Path(__file__).resolve().parents[2]

#: Lines no quiet command may print: Python warnings (``...Warning: ...`` and the source
#: line under them), Feast's CLI prints and their colour codes.
NOISE = re.compile(r"Warning\b|warnings\.warn|No project found|experimental feature|Materializing|"
                   r"Deploying infrastructure|Applying changes|\x1b\[")


@pytest.fixture
def data_dir(slice_run, tmp_path) -> Path:
    return copy_data_dir(slice_run["settings"].data_dir, tmp_path / "data")


def command(data_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PROFILE", "RAW_DIR", "VERBOSE")}
    result = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT, timeout=240,
                            env={**environ, "DATA_DIR": str(data_dir), **env})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def noise(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if NOISE.search(line)]


def test_apply_and_materialize_are_quiet_show_each_view_and_end_with_a_summary(data_dir, use_case):
    applied = command(data_dir, "cli.pipeline", "apply")
    loaded = command(data_dir, "cli.pipeline", "materialize")

    assert noise(applied) == [] and noise(loaded) == []
    assert applied.stdout == "" and loaded.stdout == "", "stdout is the command's result: nothing of Feast's"
    assert applied.stderr.splitlines()[-1].startswith("apply: feature_repo/ registered for the embedded profile")
    lines = loaded.stderr.splitlines()
    views = [re.match(r"materialize: (\d+)/(\d+) views \((\w+)(: [\d,]+ (keys online|events))?", line)
             for line in lines]
    views = [m for m in views if m]
    assert len(views) == 9 and [int(m[1]) for m in views] == list(range(1, 10)), loaded.stderr
    assert {m[3] for m in views} == {"aircraft", "carrier_daily", "origin_daily", "origin_recent", "route_daily",
                                     "weather_hourly", "origin_departures_w", "carrier_outcomes_w",
                                     "aircraft_last_arrival_w"}
    assert all(m[5] == "events" for m in views[-3:]), "the windowed views last, with the events they hold"
    assert "materialize: 9/9 views in " in loaded.stderr
    assert lines[-1].startswith("materialize: the embedded profile's online store holds the feature views up to "
                                "2013-03-01"), lines[-1]


def test_verbose_shows_the_third_party_output_again(data_dir):
    loaded = command(data_dir, "cli.pipeline", "--verbose", "materialize")

    assert "DeprecationWarning" in loaded.stderr, loaded.stderr[-3000:]
    assert "Materializing" in loaded.stderr and loaded.stdout == "", "Feast's prints go to stderr, not stdout"
    assert "materialize: 9/9 views in " in loaded.stderr, "progress as well"


def test_a_training_set_build_shows_a_clock_and_scoring_ends_with_a_summary(data_dir, tmp_path):
    out = tmp_path / "scored.parquet"
    scored = command(data_dir, "cli.training", "score", "--start", "2013-02-20", "--end", "2013-02-22",
                     "--output", str(out))

    assert noise(scored) == []
    lines = scored.stderr.splitlines()
    starts = [i for i, line in enumerate(lines)
              if re.fullmatch(r"training set: [\d,]+ rows through FeatureService 'late_arrival_v1' \.\.\.", line)]
    assert len(starts) == 1, scored.stderr
    start = starts[0]
    assert re.fullmatch(r"training set: [\d,]+ rows x \d+ columns in [\d.]+s", lines[start + 1]), lines
    assert lines[-1].startswith("scored ") and lines[-1].endswith(f"-> {out}") and out.is_file()


def test_the_verbose_option_is_accepted_before_and_after_every_command():
    from cli import monitoring, pipeline, replay, training, validation
    from cli.entry import parse

    for module, argv in ((pipeline, ["materialize"]), (training, ["list"]), (validation, ["show", "ingest"]),
                         (monitoring, ["report"]), (replay, ["run"])):
        assert not getattr(parse(module.build_parser(), argv), "verbose", False)
        assert parse(module.build_parser(), ["--verbose", *argv]).verbose
        assert parse(module.build_parser(), [*argv, "--verbose"]).verbose


QUIET_SCRIPT = """
import pathlib, warnings
from core import quiet
quiet.quiet({verbose}) if {verbose} is not None else quiet.quiet_third_party_warnings()  # the server's call
warnings.simplefilter("once")  # as Feast does when imported: a filter put before ours
warnings.warn_explicit("from a package", DeprecationWarning, "/opt/venv/lib/python3.11/site-packages/pkg/mod.py", 1)
warnings.warn_explicit("from the platform", UserWarning, str(pathlib.Path("pipeline/materialize.py").resolve()), 1)
"""


@pytest.mark.parametrize("verbose, env, shown", [(False, "", False), (True, "", True), (None, "", False),
                                                 (None, "1", True), (None, "0", False)])
def test_warnings_from_other_packages_are_hidden_and_the_platforms_shown(verbose, env, shown):
    environ = {**{k: v for k, v in os.environ.items() if k != "VERBOSE"}, "VERBOSE": env}
    result = subprocess.run([sys.executable, "-c", QUIET_SCRIPT.format(verbose=verbose)], capture_output=True,
                            text=True, cwd=ROOT, env=environ)
    assert result.returncode == 0, result.stderr
    assert "UserWarning: from the platform" in result.stderr
    assert ("DeprecationWarning: from a package" in result.stderr) is shown, result.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_plain_lines_off_a_terminal_and_a_tqdm_bar_on_one(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    plain = io.StringIO()
    with progress.Bar("materialize", total=2, unit="views", every=0, stream=plain, force=True,
                      end_note="up to then") as bar:
        bar.update(1, "aircraft: 3 keys online")
        bar.update(1, "route_daily")
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("materialize: 1/2 views (aircraft: 3 keys online), ")
    assert lines[1].startswith("materialize: 2/2 views (route_daily), ")
    assert re.fullmatch(r"materialize: 2/2 views in [\d.]+s; up to then", lines[2]), lines

    terminal = Terminal()
    with progress.Bar("replay", total=3, unit="days", stream=terminal, force=True) as bar:
        for _ in range(3):
            bar.update(1, "day")
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue() and "100%" in terminal.getvalue()


def test_bars_and_clocks_print_nothing_unless_a_command_turned_them_on(monkeypatch):
    monkeypatch.setitem(progress._state, "enabled", False)
    stream = io.StringIO()
    with progress.Bar("replay", total=2, stream=stream) as bar:
        bar.update(2)
    with progress.working("training set", stream=stream):
        pass
    assert stream.getvalue() == ""
    progress.enable()
    with progress.muted(), progress.Bar("materialize", total=1, stream=stream, every=0) as bar:
        bar.update(1)
    assert stream.getvalue() == "", "a replayed night's bars are muted"
    with progress.working("training set", "9 rows", stream=stream) as clock:
        clock.note = "9 rows x 3 columns"
    assert re.fullmatch(r"training set: 9 rows \.\.\.\ntraining set: 9 rows x 3 columns in [\d.]+s\n",
                        stream.getvalue())


def test_a_failed_step_prints_no_done_line():
    stream = io.StringIO()
    with pytest.raises(RuntimeError), progress.Bar("materialize", total=2, stream=stream, every=60, force=True) as bar:
        bar.update(1)
        raise RuntimeError("the store is gone")
    assert stream.getvalue() == ""


SPARK_SCRIPT = """
import os
from core import quiet
quiet.quiet({verbose}, spark=True)  # as cli.entry.run does
print(os.environ.get("PYSPARK_SUBMIT_ARGS", ""))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_a_quiet_command_starts_spark_with_its_log_at_warn_and_no_console_progress(verbose):
    """The JVM and Python workers pyspark starts read PYSPARK_SUBMIT_ARGS (the spark profile's
    noise: log4j's start-up lines, Hadoop's warning, the stage bars, Feast's warnings in the
    workers). Checked on the arguments: a Spark session costs a minute."""
    import shlex

    environ = {k: v for k, v in os.environ.items() if k not in ("VERBOSE", "PYSPARK_SUBMIT_ARGS")}
    result = subprocess.run([sys.executable, "-c", SPARK_SCRIPT.format(verbose=verbose)], capture_output=True,
                            text=True, cwd=ROOT, env=environ)
    assert result.returncode == 0, result.stderr
    args = shlex.split(result.stdout.strip())
    if verbose:
        assert args == [], "verbose: Spark's own defaults"
        return
    assert args[-1] == "pyspark-shell"
    conf = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--conf")
    assert conf == {"spark.ui.showConsoleProgress": "false", "spark.python.daemon.module": "core.quiet"}
    java = args[args.index("--driver-java-options") + 1]
    log4j = Path(java.removeprefix("-Dlog4j2.configurationFile=file://"))
    assert log4j.is_file() and "rootLogger.level = warn" in log4j.read_text()
