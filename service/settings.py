"""The one settings object of the service: defaults -> ``CMB_*`` environment -> flags.

Every field is validated when the object is built (``cmb serve`` / ``cmb worker``
start-up); :func:`load_settings` turns pydantic's errors into one message per
field that names the environment variable and says what to fix.  The table in
docs/settings.md lists every field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash


class SettingsError(ValueError):
    """Invalid configuration; the message says which setting and what to fix."""


def _check_ae(value: str, what: str) -> str:
    value = value.strip()
    if not _AE_RE.match(value):
        raise ValueError(f"{what} {value!r} is not a valid AE title (1-16 characters, no '\\')")
    return value


class Destination:
    """A DICOM peer to send results to, written ``AET@HOST:PORT``."""

    __slots__ = ("ae_title", "host", "port")

    def __init__(self, ae_title: str, host: str, port: int) -> None:
        self.ae_title = _check_ae(ae_title, "destination AE title")
        if not host:
            raise ValueError("destination host is empty")
        if not 0 < port < 65536:
            raise ValueError(f"destination port {port} is outside 1-65535")
        self.host = host
        self.port = port

    @classmethod
    def parse(cls, text: str) -> Destination:
        m = re.fullmatch(r"\s*([^@]+)@([^:@]+):(\d+)\s*", text)
        if not m:
            raise ValueError(
                f"destination {text!r} must be written AET@HOST:PORT, e.g. PACS@10.0.0.5:104"
            )
        return cls(m.group(1), m.group(2), int(m.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Destination({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Destination) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def _split_list(value: Any) -> Any:
    """Environment lists are comma separated: ``CMB_ALLOW_AE=PACS,MODALITY1``."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    """Everything `cmb serve` and `cmb worker` can be told. Env prefix ``CMB_``."""

    model_config = SettingsConfigDict(
        env_prefix="CMB_", env_file=None, extra="forbid", validate_default=True
    )

    # Process role
    role: Literal["all", "scp", "api"] = Field(
        "all",
        description="what this `cmb serve` runs: all; scp (listener, monitor, outbox, "
        "embedded worker); api (REST API only)",
    )

    # Storage
    data_dir: Path = Field(Path("cmb-data"), description="spool, results and the SQLite DB")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/cmb.db"
    )
    retention_days: float = Field(
        0.0, ge=0, description="remove studies and results this old (0: keep forever)"
    )
    disk_reserve_mb: float = Field(
        500.0, ge=0, description="refuse instances (0xA700) below this much free disk"
    )

    # DICOM listener
    ae_title: str = Field("CMB_AI", description="our AE title")
    dicom_host: str = Field("0.0.0.0", description="address the Storage SCP listens on")
    dicom_port: int = Field(11112, ge=0, le=65535, description="Storage SCP port (0: disabled)")
    allow_ae: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="calling AE titles allowed to associate; empty: any (see docs/service.md)",
    )
    allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="peer IP addresses allowed; empty: any"
    )
    tls_cert: Path | None = Field(None, description="PEM certificate: enables DICOM TLS")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert")
    tls_ca: Path | None = Field(None, description="CA bundle: require client certificates")
    dimse_timeout_s: float = Field(60.0, gt=0, description="DIMSE and network timeouts")

    # Stability and jobs
    stable_after: float = Field(
        60.0, gt=0, description="seconds without a new instance before a study is processed"
    )
    refusal_hold_s: float = Field(
        1800.0,
        ge=0,
        description="a study with an instance refused for lack of space waits this long for it",
    )
    poll_interval_s: float = Field(1.0, gt=0, description="how often stability/outbox are checked")
    broker_url: str | None = Field(
        None, description="Celery broker (redis://...); empty: embedded worker thread"
    )
    queue: str = Field("cmb", description="Celery queue name")
    worker_concurrency: int = Field(1, ge=1, description="jobs run at once per worker process")
    job_max_retries: int = Field(3, ge=0, description="retries of a job after a transient fault")
    job_retry_backoff_s: float = Field(30.0, ge=0, description="first retry delay (doubles)")
    job_time_limit_s: float = Field(1800.0, gt=0, description="hard time limit of one job")

    # Pipeline
    pipeline: str = Field(
        "model.pipeline:process",
        description="import path of the pipeline function (a site wrapper, or a test double)",
    )
    model_path: Path | None = Field(None, description="ONNX model; empty: the shipped model")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="inference device")
    threads: int | None = Field(None, ge=1, description="CPU threads for inference")
    classifier: Literal["auto", "on", "off"] = Field(
        "auto",
        description="candidate classifier: auto (the installed one, behind the U-Net it was "
        "trained for), on, off",
    )
    classifier_model_path: Path | None = Field(
        None, description="candidate classifier ONNX; empty: the shipped one"
    )
    location: Literal["auto", "onnx", "mri_synthseg", "off"] = Field(
        "auto",
        description="location filter: auto (the shipped parcellation model when installed), "
        "onnx (require it), mri_synthseg (FreeSurfer's, on the PATH), off",
    )
    parcellation_model_path: Path | None = Field(
        None, description="parcellation ONNX; empty: the shipped one"
    )
    outputs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["seg", "sr"], description="DICOM outputs to write and send"
    )

    # Export
    destinations: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="AET@HOST:PORT peers that receive results"
    )
    export_backoff_s: float = Field(5.0, gt=0, description="first delay after a failed send")
    export_max_backoff_s: float = Field(600.0, gt=0, description="longest delay between sends")
    export_tls: bool = Field(False, description="send results over DICOM TLS")
    export_tls_ca: Path | None = Field(
        None, description="CA bundle that signed the destinations' certificates; empty: system CAs"
    )
    export_tls_cert: Path | None = Field(
        None, description="PEM client certificate presented to the destinations"
    )
    export_tls_key: Path | None = Field(None, description="PEM private key for export_tls_cert")
    export_tls_verify: bool = Field(
        True, description="check the destination's certificate and host name"
    )

    # REST API
    api_host: str = Field("127.0.0.1", description="address of the REST API")
    api_port: int = Field(8000, ge=0, le=65535, description="REST API port (0: disabled)")
    metrics_host: str = Field("127.0.0.1", description="address of metrics_port")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="plain-HTTP Prometheus port of this process's own counters, for role scp "
        "(which serves no REST API) (0: off)",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="NAME:KEY pairs; empty: one key is generated in <data_dir>/api-key",
    )
    max_upload_mb: float = Field(
        2048.0, gt=0, description="largest accepted upload (bytes received, chunked or not)"
    )
    zip_max_total_mb: float = Field(
        4096.0, gt=0, description="largest total decompressed size of one uploaded zip archive"
    )
    zip_max_members: int = Field(20000, gt=0, description="most files in one uploaded zip archive")
    zip_max_ratio: float = Field(
        200.0, gt=1, description="highest decompressed/compressed size ratio of a zip member"
    )

    # Logging
    log_format: Literal["json", "text"] = Field("json", description="log line format")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")

    @field_validator(
        "allow_ae", "allow_hosts", "destinations", "api_keys", "outputs", mode="before"
    )
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae(v, "AE title")

    @field_validator("allow_ae")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        return [_check_ae(a, "allowed AE title") for a in v]

    @field_validator("destinations")
    @classmethod
    def _dest(cls, v: list[str]) -> list[str]:
        return [str(Destination.parse(d)) for d in v]

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, v: list[str]) -> list[str]:
        allowed = ("seg", "sr", "pdf", "sc")
        bad = [o for o in v if o not in allowed]
        if bad:
            raise ValueError(f"unknown output(s) {bad}; choose from {', '.join(allowed)}")
        return v

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for item in v:
            name, sep, key = item.partition(":")
            if not sep or not name or len(key) < 16:
                raise ValueError(
                    "each API key must be written NAME:KEY with a key of at least 16 characters"
                )
        return v

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError("must be written module.path:function")
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str | None) -> str | None:
        if v and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        return v or None

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        if v and not re.match(r"^(redis|rediss|memory)://", v):
            raise ValueError("the broker must be a redis:// URL (or empty for the embedded worker)")
        return v or None

    @model_validator(mode="after")
    def _tls(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if (self.export_tls_cert is None) != (self.export_tls_key is None):
            raise ValueError("export_tls_cert and export_tls_key must be set together")
        export_files = (self.export_tls_ca, self.export_tls_cert, self.export_tls_key)
        if not self.export_tls and any(p is not None for p in export_files):
            raise ValueError(
                "export TLS files are set but export_tls is false: set CMB_EXPORT_TLS=true"
            )
        for p in (self.tls_cert, self.tls_key, self.tls_ca, *export_files):
            if p is not None and not p.is_file():
                raise ValueError(f"TLS file {p} does not exist")
        if self.metrics_port and self.runs_api and self.metrics_port == self.api_port:
            raise ValueError("metrics_port must differ from api_port (the API has /metrics)")
        if self.role == "api" and not self.api_port:
            raise ValueError("role api runs only the REST API: give it an api_port (not 0)")
        if self.export_max_backoff_s < self.export_backoff_s:
            raise ValueError("export_max_backoff_s must be >= export_backoff_s")
        return self

    # Derived values -----------------------------------------------------------------
    @property
    def runs_scp(self) -> bool:
        """Runs the listener, the stability monitor, the outbox (and the embedded worker)."""
        return self.role in ("all", "scp")

    @property
    def runs_api(self) -> bool:
        return self.role in ("all", "api")

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'cmb.db').resolve()}"

    @property
    def destination_list(self) -> list[Destination]:
        return [Destination.parse(d) for d in self.destinations]

    def api_key_map(self) -> dict[str, str]:
        """key -> name of every accepted API key."""
        return {k: n for n, _, k in (item.partition(":") for item in self.api_keys)}


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings or raise one readable SettingsError.

    Precedence: ``overrides`` (command-line flags) > environment > ``config``
    (a file of ``CMB_NAME=value`` lines) > defaults.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    if config is not None and not Path(config).is_file():
        raise SettingsError(f"config file {config} does not exist")
    try:
        return Settings(_env_file=config, **clean)  # type: ignore[call-arg]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            if err["type"] == "extra_forbidden":
                lines.append(f"{field.upper()}: unknown setting (see docs/settings.md)")
                continue
            env = f"CMB_{field.upper()}" if field != "settings" else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{field} ({env}): {msg}")
        raise SettingsError("invalid settings: " + "; ".join(lines)) from e


def settings_environment(settings: Settings) -> dict[str, str]:
    """``CMB_*`` variables that rebuild ``settings`` in another process (Celery pool)."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        env[f"CMB_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    return env
