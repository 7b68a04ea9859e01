"""Every test starts from the documented defaults: no developer .env file, no LIKENESS_* variables."""

import os

import pytest

from storage.settings import Settings


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, request):
    for name in list(os.environ):
        if name.startswith("LIKENESS_"):
            monkeypatch.delenv(name)
    if "reads_env_file" not in request.keywords:
        monkeypatch.setitem(Settings.model_config, "env_file", None)
