"""The security settings read from NEXTBEST_*: CORS origins, rate limits, the browser body."""

from __future__ import annotations

import pytest

from nextbest.errors import ConfigError
from nextbest.settings import Settings, without_password


def test_defaults_a_real_bank_page_never_meets():
    s = Settings.from_env({})
    assert s.cors_origins == frozenset()  # no CORS unless the bank names its origins
    assert (s.key_rate, s.key_burst) == (10_000.0, 20_000)
    assert (s.session_rate, s.session_burst, s.rate_sessions_max) == (10.0, 100, 100_000)
    assert s.browser_body_bytes == 512_000 < s.max_body_bytes


def test_limits_and_origins_from_the_environment():
    s = Settings.from_env(
        {
            "NEXTBEST_CORS_ORIGINS": "https://WWW.Bank.example/, http://localhost:3000,"
            " https://bank.example:443",
            "NEXTBEST_CORS_CREDENTIALS": "true",
            "NEXTBEST_CORS_MAX_AGE": "60",
            "NEXTBEST_KEY_RATE": "2.5",
            "NEXTBEST_KEY_BURST": "5",
            "NEXTBEST_SESSION_RATE": "0",
            "NEXTBEST_SESSION_BURST": "7",
            "NEXTBEST_RATE_SESSIONS_MAX": "1000",
            "NEXTBEST_BROWSER_BODY_BYTES": "64000",
        }
    )
    assert s.cors_origins == {
        "https://www.bank.example",
        "http://localhost:3000",
        "https://bank.example",
    }
    assert (s.cors_credentials, s.cors_max_age) == (True, 60)
    assert (s.key_rate, s.key_burst, s.session_rate, s.session_burst) == (2.5, 5, 0.0, 7)
    assert (s.rate_sessions_max, s.browser_body_bytes) == (1000, 64_000)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NEXTBEST_CORS_ORIGINS": "*", "NEXTBEST_CORS_CREDENTIALS": "1"}, "cannot go with"),
        ({"NEXTBEST_CORS_ORIGINS": "https://bank.example/app"}, "is not an origin"),
        ({"NEXTBEST_CORS_ORIGINS": "bank.example"}, "is not an origin"),
        ({"NEXTBEST_CORS_CREDENTIALS": "maybe"}, "true or false"),
        ({"NEXTBEST_KEY_RATE": "fast"}, "requests a second"),
        ({"NEXTBEST_SESSION_RATE": "-1"}, "finite number >= 0"),
        ({"NEXTBEST_SESSION_RATE": "inf"}, "finite number >= 0"),
        ({"NEXTBEST_KEY_BURST": "0"}, "at least 1"),
        ({"NEXTBEST_RATE_SESSIONS_MAX": "many"}, "whole number"),
        ({"NEXTBEST_CALLBACK_SWEEP_SECONDS": "often"}, "seconds"),
        ({"NEXTBEST_CALLBACK_SWEEP_SECONDS": "-1"}, "0 \\(off\\) to 3600"),
    ],
)
def test_bad_security_settings_are_refused_at_start(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match=r"must be written 'https://bank\.example'"):
        Settings(cors_origins=frozenset({"https://Bank.example"}))
    with pytest.raises(ConfigError, match="cannot go with"):
        Settings(cors_origins=frozenset({"*"}), cors_credentials=True)


def test_the_advisor_token_secret_and_the_sweep_interval():
    s = Settings.from_env(
        {
            "NEXTBEST_SERVER_KEYS": "k",
            "NEXTBEST_ADVISOR_TOKEN_SECRET": "contact-centre-secret",
            "NEXTBEST_CALLBACK_SWEEP_SECONDS": "0",
        }
    )
    assert (s.advisor_token_secret, s.callback_sweep_seconds) == ("contact-centre-secret", 0.0)
    assert "contact-centre-secret" not in repr(s)
    assert "advisor_token_secret='<secret>'" in repr(s)
    dev = Settings.from_env({})  # no keys: the development ones, advisor tokens included
    assert dev.advisor_token_secret == "dev-advisor-token-secret"
    assert dev.uses_dev_keys
    assert Settings.from_env({"NEXTBEST_SERVER_KEYS": "k"}).advisor_token_secret == ""


def test_where_the_client_address_is_read_from_the_environment():
    s = Settings.from_env(
        {
            "NEXTBEST_ORIGIN_HEADER": "X-Real-IP",
            "NEXTBEST_ORIGIN_PREFIX_V4": "32",
            "NEXTBEST_ORIGIN_PREFIX_V6": "64",
        }
    )
    assert (s.origin_header, s.origin_prefix_v4, s.origin_prefix_v6) == ("X-Real-IP", 32, 64)
    assert Settings.from_env({}).origin_header == ""
    with pytest.raises(ConfigError, match="NEXTBEST_ORIGIN_PREFIX_V4"):
        Settings.from_env({"NEXTBEST_ORIGIN_PREFIX_V4": "33"})
    with pytest.raises(ConfigError, match="NEXTBEST_ORIGIN_HEADER"):
        Settings.from_env({"NEXTBEST_ORIGIN_HEADER": "X Real IP"})


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (
            "postgresql://nextbest:hunter2@db.bank:5432/nb",
            "postgresql://nextbest:***@db.bank:5432/nb",
        ),
        ("postgres://nextbest:p@ss:w0rd@db/nb", "postgres://nextbest:***@db/nb"),
        (
            "postgresql://db/nb?sslmode=require&password=hunter2",
            "postgresql://db/nb?sslmode=require&password=***",
        ),
        ("postgresql://nextbest@db/nb", "postgresql://nextbest@db/nb"),
        (".nextbest/embedded.sqlite", ".nextbest/embedded.sqlite"),
    ],
)
def test_a_data_url_is_shown_without_its_password(data: str, shown: str):
    assert without_password(data) == shown
    assert "hunter2" not in repr(Settings(data=data))


def test_nextbest_store_names_the_logs_store_as_nextbest_data_does():
    url = "postgresql://nextbest@db.bank.internal:5432/nextbest"
    assert Settings.from_env({"NEXTBEST_STORE": url}).data == url
    assert Settings.from_env({"NEXTBEST_STORE": url, "NEXTBEST_DATA": url}).data == url
    with pytest.raises(ConfigError, match="NEXTBEST_STORE and NEXTBEST_DATA"):
        Settings.from_env({"NEXTBEST_STORE": url, "NEXTBEST_DATA": "other.sqlite"})


def test_old_token_secrets_are_read_and_never_shown():
    settings = Settings.from_env(
        {
            "NEXTBEST_ADMIN_KEYS": "a",
            "NEXTBEST_TOKEN_SECRET": "new-secret-xyz",
            "NEXTBEST_TOKEN_SECRETS_OLD": " old-one-abc , ,old-two-def",
        }
    )
    assert settings.token_secrets_old == ("old-one-abc", "old-two-def")
    shown = repr(settings)
    assert "<2 secrets>" in shown
    for secret in ("new-secret-xyz", "old-one-abc", "old-two-def"):
        assert secret not in shown
    assert Settings.from_env({"NEXTBEST_ADMIN_KEYS": "a"}).token_secrets_old == ()


def test_a_fold_worker_of_some_partitions_from_the_environment():
    s = Settings.from_env({"NEXTBEST_FOLD_PARTITIONS": "0-7", "NEXTBEST_FOLD_CACHE": "5000"})
    assert (s.fold_partitions, s.fold_cache) == ("0-7", 5000)
    assert Settings.from_env({}).fold_partitions == ""  # one fold worker owns them all
    with pytest.raises(ConfigError, match="NEXTBEST_FOLD_CACHE"):
        Settings.from_env({"NEXTBEST_FOLD_CACHE": "0"})
