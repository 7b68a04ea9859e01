import pytest

from storage.settings import Settings, SettingsError, load_settings


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LIKENESS_DEVICE": "gpu"}, "LIKENESS_DEVICE"),
        ({"LIKENESS_MODEL_FAMILY": "sdxl"}, "LIKENESS_MODEL_PATH"),
        ({"LIKENESS_MODEL_FAMILY": "dalle"}, "LIKENESS_MODEL_FAMILY"),
        ({"LIKENESS_ADMIN_USER_IDS": "12,abc"}, "LIKENESS_ADMIN_USER_IDS"),
        ({"LIKENESS_MAX_PHOTOS_PER_SUBJECT": "0"}, "LIKENESS_MAX_PHOTOS_PER_SUBJECT"),
        ({"LIKENESS_MIN_PHOTOS_PER_SUBJECT": "30"}, "LIKENESS_MIN_PHOTOS_PER_SUBJECT"),
        ({"LIKENESS_WORKER_LEASE_S": "-1"}, "LIKENESS_WORKER_LEASE_S"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, env, variable):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(variable + ":"), message
    assert "\n" not in message


def test_lists_accept_commas_spaces_or_json(monkeypatch):
    monkeypatch.setenv("LIKENESS_ADMIN_USER_IDS", "1, 2 3")
    monkeypatch.setenv("LIKENESS_ALLOWED_GUILD_IDS", "[10,20]")
    monkeypatch.setenv("LIKENESS_PROMPT_BLOCKLIST", "Gore, nude ,")
    settings = load_settings()
    assert settings.admin_user_ids == [1, 2, 3]
    assert settings.allowed_guild_ids == [10, 20]
    assert settings.prompt_blocklist == ["gore", "nude"]
    assert settings.is_admin(2) and not settings.is_admin(4)


@pytest.mark.reads_env_file
def test_env_file_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LIKENESS_MODEL_FAMILY=tiny-flux\nLIKENESS_ADAPTER_CACHE_SIZE=7\n")
    settings = load_settings()
    assert (settings.model_family, settings.adapter_cache_size) == ("tiny-flux", 7)


def test_worker_env_round_trips_to_the_same_settings(tmp_path, monkeypatch):
    original = Settings(data_dir=tmp_path, admin_user_ids=[5, 6], prompt_blocklist=["gore"], train_steps=9,
                        model_family="tiny-sdxl")
    for key, value in original.worker_env().items():
        monkeypatch.setenv(key, value)
    rebuilt = load_settings()
    assert rebuilt.model_dump() == original.model_dump(exclude={"data_dir"}) | {"data_dir": tmp_path.resolve()}


def test_defaults_run_offline_on_the_tiny_model(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.model_family == "tiny-sd15" and settings.is_tiny_model
    assert settings.discord_token is None
    assert settings.database_path == settings.data_dir / "likeness.sqlite3"
