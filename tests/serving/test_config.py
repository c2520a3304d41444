"""The server's settings are checked where they are built: a bad value is a ConfigError
naming its variable; gunicorn takes its bind address and processes from the same checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.errors import ConfigError
from serving.config import MAX_BATCH, LogConfig, ServingConfig, WebConfig


def test_defaults_and_values_as_given(tmp_path):
    config = ServingConfig.from_env({"DATA_DIR": str(tmp_path)})
    assert (config.max_batch, config.model_check_seconds) == (MAX_BATCH, 1.0)
    assert config.web == WebConfig(workers=2, threads=4, access_log="-", read_timeout=10.0)
    assert config.log == LogConfig(directory=tmp_path / "logs" / "served")
    config = ServingConfig.from_env({"DATA_DIR": str(tmp_path), "MAX_BATCH": "7", "MODEL_CHECK_SECONDS": "0",
                                     "WEB_CONCURRENCY": "3", "WEB_THREADS": "1", "ACCESS_LOG": "",
                                     "REQUEST_READ_TIMEOUT": "2.5",
                                     "FEATURE_LOG_SAMPLE_RATE": "0.25", "FEATURE_LOG_BATCH_ROWS": "5",
                                     "FEATURE_LOG_MAX_BUFFERED_ROWS": "5"})
    assert (config.max_batch, config.model_check_seconds) == (7, 0.0)
    assert config.web == WebConfig(workers=3, threads=1, access_log=None, read_timeout=2.5)
    assert (config.log.sample_rate, config.log.batch_rows, config.log.max_buffered_rows) == (0.25, 5, 5)


@pytest.mark.parametrize("variable, value", [
    ("MAX_BATCH", "0"), ("MAX_BATCH", "ten"), ("MAX_BATCH", "1.5"),
    ("MODEL_CHECK_SECONDS", "-1"), ("MODEL_CHECK_SECONDS", "nan"),
    ("WEB_CONCURRENCY", "0"), ("WEB_THREADS", "x"), ("REQUEST_READ_TIMEOUT", "0"), ("REQUEST_READ_TIMEOUT", "inf"),
    ("FEATURE_LOG_SAMPLE_RATE", "1.5"), ("FEATURE_LOG_BATCH_ROWS", "0"), ("FEATURE_LOG_FLUSH_SECONDS", "later"),
    ("FEATURE_LOG_SEED", "0x1"), ("FEATURE_LOG_MAX_BUFFERED_ROWS", "5"),
    ("PORT", "abc"), ("PORT", "70000"),
])
def test_a_bad_value_is_a_config_error_naming_the_variable(tmp_path, variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}="):
        ServingConfig.from_env({"DATA_DIR": str(tmp_path), variable: value})


def test_gunicorn_binds_and_sizes_from_the_checked_settings(tmp_path):
    """``serving/gunicorn_conf.py`` as gunicorn loads it, in a process of its own (it sets
    PROMETHEUS_MULTIPROC_DIR in its environment)."""
    code = ("import json, runpy\n"
            "conf = runpy.run_path('serving/gunicorn_conf.py')\n"
            "print(json.dumps({k: conf[k] for k in ('bind', 'workers', 'threads', 'accesslog', 'worker_class')}))\n"
            "import os; print(os.environ['PROMETHEUS_MULTIPROC_DIR'])\n")
    env = {"DATA_DIR": str(tmp_path), "PATH": "", "HOST": "0.0.0.0", "PORT": "8123", "WEB_CONCURRENCY": "3",
           "WEB_THREADS": "2", "ACCESS_LOG": "", "SERVING_TOKEN": "0123456789abcdef"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    conf, multiproc = result.stdout.splitlines()
    assert json.loads(conf) == {"bind": "0.0.0.0:8123", "workers": 3, "threads": 2, "accesslog": None,
                                "worker_class": "serving.worker.ReadFirstWorker"}
    assert multiproc == str(tmp_path / "metrics" / "8123")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**env, "HOST": "::1"})
    assert json.loads(result.stdout.splitlines()[0])["bind"] == "[::1]:8123"
    for variable, value in (("PORT", "x"), ("SERVING_TOKEN", "")):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={**env, variable: value})
        assert result.returncode == 2 and result.stderr.startswith(f"error: {'PORT' if value else 'HOST'}="), (
            result.stderr)
