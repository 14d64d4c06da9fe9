"""Settings from the environment: defaults, served models, clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from genq.broker import queue_name
from genq.settings import ConfigError, Settings
from genq.store.db import normalize_url


def test_defaults_are_the_embedded_service() -> None:
    s = Settings.from_env({})
    assert s.database_url == "sqlite:///./var/genq.db"
    assert s.broker_url == "filesystem://./var/broker"
    assert s.default_model == "smollm2-135m-instruct"
    assert s.models["smollm2-135m-instruct"].kind == "gguf"
    assert queue_name(s.models["smollm2-135m-instruct"].name) == "genq.model.smollm2-135m-instruct"
    assert (s.host, s.port, s.batch_size) == ("127.0.0.1", 8000, 64)
    assert (s.lease_seconds, s.sweep_interval, s.republish_after) == (30, 15, 60)
    assert (s.events_max_streams, s.events_max_streams_per_client, s.events_max_seconds) == (1000, 20, 600)


def test_genq_models_adds_gguf_files_and_hf_directories_with_quantization(tmp_path: Path) -> None:
    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"GGUF")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    s = Settings.from_env({"GENQ_MODELS": f"a={gguf}, b={hf}:int8"})
    assert (s.models["a"].kind, s.models["a"].quantization) == ("gguf", None)
    assert (s.models["b"].kind, s.models["b"].quantization, s.models["b"].source) == ("hf", "int8", hf.resolve())
    assert "smollm2-135m-instruct" in s.models


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"GENQ_MODELS": "nopath"}, "GENQ_MODELS"),
        ({"GENQ_MODELS": "x=/definitely/not/here.gguf"}, "GENQ_MODELS"),
        ({"GENQ_MODELS": "bad name=/tmp"}, "GENQ_MODELS"),
        ({"GENQ_DEFAULT_MODEL": "other"}, "GENQ_DEFAULT_MODEL"),
        ({"GENQ_BATCH_SIZE": "many"}, "GENQ_BATCH_SIZE"),
        ({"GENQ_BATCH_SIZE": "0"}, "GENQ_BATCH_SIZE"),
        ({"GENQ_PORT": "70000"}, "GENQ_PORT"),
        ({"GENQ_GENERATION_DEFAULTS": "{"}, "GENQ_GENERATION_DEFAULTS"),
        ({"GENQ_GENERATION_DEFAULTS": '{"temperature": -1}'}, "GENQ_GENERATION_DEFAULTS"),
        ({"GENQ_GENERATION_DEFAULTS": "[1]"}, "GENQ_GENERATION_DEFAULTS"),
        ({"GENQ_JOB_TIMEOUT": "7200", "GENQ_BROKER_VISIBILITY_TIMEOUT": "3600"}, "GENQ_BROKER_VISIBILITY_TIMEOUT"),
        ({"GENQ_LEASE_SECONDS": "1"}, "GENQ_LEASE_SECONDS"),
        ({"GENQ_SWEEP_INTERVAL": "0"}, "GENQ_SWEEP_INTERVAL"),
        ({"GENQ_REPUBLISH_AFTER": "soon"}, "GENQ_REPUBLISH_AFTER"),
        ({"GENQ_EVENTS_MAX_STREAMS": "0"}, "GENQ_EVENTS_MAX_STREAMS"),
        ({"GENQ_EVENTS_MAX_STREAMS_PER_CLIENT": "many"}, "GENQ_EVENTS_MAX_STREAMS_PER_CLIENT"),
        ({"GENQ_EVENTS_MAX_SECONDS": "0"}, "GENQ_EVENTS_MAX_SECONDS"),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable


@pytest.mark.parametrize(
    "url,expected",
    [
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///./var/genq.db", "sqlite:///./var/genq.db"),
    ],
)
def test_postgres_urls_are_pointed_at_psycopg3(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_engine_memory_and_dtype_come_from_the_environment():
    s = Settings.from_env({"GENQ_MAX_LEN": "512", "GENQ_KV_BUDGET_MB": "1024", "GENQ_DTYPE": "bfloat16"})
    assert (s.max_len, s.kv_budget_mb, s.dtype) == (512, 1024, "bfloat16")


@pytest.mark.parametrize("value", [None, "", "auto"])
def test_the_kv_budget_defaults_to_one_sized_from_the_machine_at_load(value: str | None) -> None:
    assert Settings.from_env({} if value is None else {"GENQ_KV_BUDGET_MB": value}).kv_budget_mb is None


def test_a_bad_kv_budget_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"GENQ_KV_BUDGET_MB": "0"})
    assert "GENQ_KV_BUDGET_MB" in str(e.value)


def test_an_unknown_dtype_is_refused_naming_the_variable():
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"GENQ_DTYPE": "float8"})
    assert e.value.variable == "GENQ_DTYPE"


def test_the_dtype_defaults_to_auto():
    assert Settings.from_env({}).dtype == "auto"
