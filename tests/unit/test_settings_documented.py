"""Every setting the app reads is in local.settings.sample.json, and every sample setting is in the README."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fakes import Recording

from shared.run.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]


def test_every_setting_read_is_in_the_sample():
    env = Recording({k: v for k, v in SAMPLE.items() if v})
    Settings.from_env(env)
    assert env.read - set(SAMPLE) == set()


def test_every_sample_setting_is_explained_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([A-Za-z_]+)`", readme)) | {
        f"DatasetStorage{s}" for s in re.findall(r"`(__[a-zA-Z]+)`", readme)}
    assert set(SAMPLE) - documented == set()


def test_a_wrong_setting_is_named():
    env = {k: v for k, v in SAMPLE.items() if v}
    with pytest.raises(ConfigError, match="FTOPS_TRANSPORT"):
        Settings.from_env({**env, "FTOPS_TRANSPORT": "carrier-pigeon"})
    with pytest.raises(ConfigError, match="POLL_CONCURRENCY"):
        Settings.from_env({**env, "POLL_CONCURRENCY": "many"})
