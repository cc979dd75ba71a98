"""Settings from the environment: database URLs for both backends, defaults for the
embedded mode, and one clear SettingsError for a value billtrail cannot use."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from billtrail.bootstrap import eventsourcing_env, seal_key
from billtrail.settings import SANDBOX_API_KEY, DatabaseURL, Settings, SettingsError


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///billtrail.db", Path("billtrail.db")),
        ("sqlite:///var/demo/billtrail.db", Path("var/demo/billtrail.db")),
        ("sqlite:////srv/billtrail/ledger.db", Path("/srv/billtrail/ledger.db")),
        ("sqlite:///my%20files/b.db", Path("my files/b.db")),
    ],
)
def test_sqlite_urls_give_relative_and_absolute_paths(url: str, path: Path) -> None:
    db = DatabaseURL.parse(url)
    assert (db.backend, db.path) == ("sqlite", path)
    assert db.path is not None
    assert db.path.is_absolute() is url.startswith("sqlite:////")


def test_postgresql_url_with_every_part() -> None:
    db = DatabaseURL.parse("postgresql://billing:s%40cret@db.internal:6543/billtrail?schema=ledger")
    assert db == DatabaseURL(
        backend="postgres",
        user="billing",
        password="s@cret",
        host="db.internal",
        port=6543,
        dbname="billtrail",
        schema="ledger",
    )
    assert db.path is None


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgresql_url_defaults(scheme: str) -> None:
    db = DatabaseURL.parse(f"{scheme}://127.0.0.1/billtrail")
    assert (db.backend, db.user, db.password, db.host, db.port, db.dbname, db.schema) == (
        "postgres",
        "postgres",
        "",
        "127.0.0.1",
        5432,
        "billtrail",
        "public",
    )


def test_postgresql_settings_reach_the_library() -> None:
    env = eventsourcing_env(DatabaseURL.parse("postgresql://u@h:7000/d?schema=s"))
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "h",
        "7000",
        "d",
    )
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_SCHEMA"]) == (
        "u",
        "",
        "s",
    )
    sqlite = eventsourcing_env(DatabaseURL.parse("sqlite:///x/y.db"))
    assert (sqlite["PERSISTENCE_MODULE"], sqlite["SQLITE_DBNAME"]) == (
        "eventsourcing.sqlite",
        "x/y.db",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "no file path"),
        ("sqlite:///", "no file path"),
        ("sqlite:relative.db", "no file path"),
        ("mysql://root@localhost/billtrail", "must start with sqlite:/// or postgresql://"),
        ("billtrail.db", "must start with sqlite:/// or postgresql://"),
        ("", "must start with sqlite:/// or postgresql://"),
        ("postgresql://localhost", "expected postgresql://user@host:port/db"),
        ("postgresql:///billtrail", "expected postgresql://user@host:port/db"),
        ("postgresql://u@localhost:99999/billtrail", "bad port"),
        ("postgresql://u@localhost:port/billtrail", "bad port"),
        ("sqlite:///x.db?mode=ro", "takes no options"),
    ],
)
def test_bad_database_urls_raise_settings_error_naming_the_setting(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        DatabaseURL.parse(url)
    assert str(info.value).startswith("BILLTRAIL_DATABASE_URL")
    assert repr(url) in str(info.value)
    if url:  # (an empty variable means the default)
        with pytest.raises(SettingsError, match=message):
            Settings.from_env({"BILLTRAIL_DATABASE_URL": url})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "utc+2", "../../etc/passwd", "/abs"])
def test_unknown_time_zones_raise_settings_error(zone: str) -> None:
    with pytest.raises(SettingsError, match=r"BILLTRAIL_TIMEZONE: unknown time zone") as info:
        Settings.from_env({"BILLTRAIL_TIMEZONE": zone})
    assert repr(zone) in str(info.value)


def test_defaults_are_the_embedded_mode() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/billtrail.db"
    assert settings.database == DatabaseURL(backend="sqlite", path=Path("var/billtrail.db"))
    assert settings.var_dir == Path("var")
    assert settings.seal_key_file == Path("var/seal.key")
    assert settings.timezone == ZoneInfo("UTC")
    assert settings.stripe_api_key == SANDBOX_API_KEY
    assert (settings.secret_key, settings.seal_key, settings.stripe_api_base) == (None, None, None)
    assert (settings.stripe_webhook_secrets, settings.smtp_url) == ((), None)


def test_every_setting_is_read_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "BILLTRAIL_VAR_DIR": str(tmp_path),
            "BILLTRAIL_DATABASE_URL": "postgresql://u@h/d",
            "BILLTRAIL_SECRET_KEY": "s3",
            "BILLTRAIL_SEAL_KEY": "k" * 32,
            "BILLTRAIL_TIMEZONE": "Europe/Berlin",
            "STRIPE_API_KEY": "sk_test_x",
            "STRIPE_API_BASE": "http://127.0.0.1:12111",
            "STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b,,",
            "BILLTRAIL_SMTP_URL": "smtp://localhost:2525",
        }
    )
    assert settings.database.backend == "postgres"
    assert settings.seal_key == b"k" * 32
    assert settings.seal_key_file == tmp_path / "seal.key"
    assert settings.timezone == ZoneInfo("Europe/Berlin")
    assert settings.stripe_webhook_secrets == ("whsec_a", "whsec_b")
    assert (settings.secret_key, settings.stripe_api_key) == ("s3", "sk_test_x")
    assert (settings.stripe_api_base, settings.smtp_url) == (
        "http://127.0.0.1:12111",
        "smtp://localhost:2525",
    )


def test_the_default_database_lives_in_the_var_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"BILLTRAIL_VAR_DIR": str(tmp_path / "v")})
    assert settings.database.path == tmp_path / "v" / "billtrail.db"


def test_empty_values_fall_back_to_the_defaults() -> None:
    settings = Settings.from_env(
        {"BILLTRAIL_DATABASE_URL": "", "BILLTRAIL_TIMEZONE": "", "STRIPE_API_KEY": ""}
    )
    assert settings.database.backend == "sqlite"
    assert settings.timezone == ZoneInfo("UTC")
    assert settings.stripe_api_key == SANDBOX_API_KEY


def test_without_a_mapping_settings_come_from_os_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BILLTRAIL_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("BILLTRAIL_TIMEZONE", "Asia/Tokyo")
    settings = Settings.from_env()
    assert settings.database.path == tmp_path / "env.db"
    assert settings.timezone == ZoneInfo("Asia/Tokyo")


def test_postgresql_needs_a_seal_key_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"BILLTRAIL_DATABASE_URL": "postgresql://u@h/d", "BILLTRAIL_VAR_DIR": str(tmp_path)}
    )
    with pytest.raises(SettingsError, match="BILLTRAIL_SEAL_KEY is required with PostgreSQL"):
        seal_key(settings)
    assert not settings.seal_key_file.exists()


def test_the_embedded_mode_makes_a_private_seal_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env({"BILLTRAIL_VAR_DIR": str(tmp_path / "var")})
    key = seal_key(settings)
    assert len(key) >= 32
    assert settings.seal_key_file.stat().st_mode & 0o777 == 0o600
    assert "made a new seal key" in capsys.readouterr().err
    assert seal_key(settings) == key  # read back, not made again
    assert capsys.readouterr().err == ""


def test_a_seal_key_file_that_is_too_short_is_refused(tmp_path: Path) -> None:
    settings = Settings.from_env({"BILLTRAIL_VAR_DIR": str(tmp_path)})
    settings.seal_key_file.write_bytes(b"short\n")
    with pytest.raises(SettingsError, match="fewer than 32 bytes"):
        seal_key(settings)


def test_the_seal_key_from_the_environment_wins(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"BILLTRAIL_VAR_DIR": str(tmp_path), "BILLTRAIL_SEAL_KEY": "e" * 40}
    )
    settings.seal_key_file.write_bytes(b"f" * 64)
    assert seal_key(settings) == b"e" * 40


def test_a_seal_key_from_the_environment_must_be_at_least_32_bytes() -> None:
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings.from_env({"BILLTRAIL_SEAL_KEY": "short"})
    assert Settings.from_env({"BILLTRAIL_SEAL_KEY": "k" * 32}).seal_key == b"k" * 32
