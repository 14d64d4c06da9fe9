"""GET /v1/models and GET /healthz."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api import create_app
from genq.settings import Settings


def test_models_lists_the_default_model_with_its_context_length_and_defaults(settings: Settings) -> None:
    response = create_app(settings).test_client().get("/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.get_json()["data"]}
    default = models["smollm2-135m-instruct"]
    assert default["default"] is True and default["source"] == "gguf"
    assert default["context_length"] == 8192  # GENQ_MAX_LEN unset: the model's own context length
    assert default["vocab_size"] == 49152
    assert default["generation_defaults"]["max_new_tokens"] == 256


@pytest.mark.parametrize("max_len,advertised", [("512", 512), ("16384", 8192)])
def test_the_advertised_context_length_is_the_one_the_engine_enforces(
    settings: Settings, max_len: str, advertised: int
) -> None:
    settings = Settings.from_env({"DATABASE_URL": settings.database_url, "GENQ_BROKER_URL": settings.broker_url,
                                  "GENQ_MAX_LEN": max_len})
    model = create_app(settings).test_client().get("/v1/models").get_json()["data"][0]
    assert model["context_length"] == advertised  # GENQ_MAX_LEN, capped by the model's own context length


def test_an_hf_model_directory_shows_its_generation_config(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"max_position_embeddings": 512}')
    (model_dir / "generation_config.json").write_text('{"do_sample": true, "temperature": 0.6, "eos_token_id": 2}')
    settings = Settings.from_env({"DATABASE_URL": settings.database_url, "GENQ_BROKER_URL": settings.broker_url,
                                  "GENQ_MODELS": f"tiny={model_dir}"})
    client = create_app(settings).test_client()
    tiny = {m["name"]: m for m in client.get("/v1/models").get_json()["data"]}["tiny"]
    assert (tiny["source"], tiny["context_length"], tiny["vocab_size"]) == ("hf", 512, None)
    assert tiny["generation_defaults"]["do_sample"] is True and tiny["generation_defaults"]["temperature"] == 0.6
    job = client.post("/v1/jobs", json={"model": "tiny", "prompt": "x"}).get_json()
    assert job["params"]["temperature"] == 0.6 and isinstance(job["params"]["seed"], int)


def test_healthz_is_ok_when_the_database_answers_migrated_and_the_broker_too(settings: Settings) -> None:
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and set(body["checks"]) == {"database", "migrations", "broker"}
    assert body["checks"]["migrations"].startswith("at head")


def test_healthz_is_503_in_the_error_shape_when_the_database_is_down(filesystem_broker_url: str) -> None:
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/nothing", "GENQ_BROKER_URL": filesystem_broker_url,
    })
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"


def test_the_api_counts_prompt_tokens_without_loading_torch(migrated_sqlite_url: str,
                                                            filesystem_broker_url: str) -> None:
    """The API loads the model's tokenizer and chat template, never its weights or torch (seconds per process
    and hundreds of MB it does not need)."""
    script = """if True:
        import sys
        from api import create_app
        from genq.settings import Settings
        client = create_app(Settings.from_env()).test_client()
        assert client.get("/v1/models").get_json()["data"][0]["vocab_size"] == 49152
        r = client.post("/v1/jobs", json={"messages": [{"role": "user", "content": "hi " * 9000}]})
        assert r.get_json()["error"]["code"] == "context_length_exceeded", r.get_json()
        assert "torch" not in sys.modules
    """
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "DATABASE_URL": migrated_sqlite_url,
           "GENQ_BROKER_URL": filesystem_broker_url}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
