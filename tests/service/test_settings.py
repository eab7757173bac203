"""Settings: defaults, CMB_* environment, flags, and start-up errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Destination, SettingsError, load_settings


def test_defaults_need_no_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.broker_url is None  # embedded worker
    assert s.db_url.startswith("sqlite:///") and s.db_url.endswith("cmb-data/cmb.db")
    assert (s.ae_title, s.dicom_port, s.api_port, s.stable_after) == ("CMB_AI", 11112, 8000, 60.0)
    assert s.allow_ae == []


def test_environment_lists_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMB_ALLOW_AE", "PACS, MODALITY1")
    monkeypatch.setenv("CMB_DESTINATIONS", "PACS@10.0.0.5:104")
    monkeypatch.setenv("CMB_STABLE_AFTER", "30")
    s = load_settings(stable_after=5)
    assert s.allow_ae == ["PACS", "MODALITY1"]
    assert s.destination_list == [Destination("PACS", "10.0.0.5", 104)]
    assert s.stable_after == 5


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("CMB_DICOM_PORT", "70000", "dicom_port (CMB_DICOM_PORT)"),
        ("CMB_DESTINATIONS", "PACS:104", "must be written AET@HOST:PORT"),
        ("CMB_AE_TITLE", "A_TITLE_FAR_TOO_LONG", "not a valid AE title"),
        ("CMB_API_KEYS", "short", "NAME:KEY"),
        ("CMB_BROKER_URL", "amqp://x", "redis://"),
        ("CMB_DATABASE_URL", "mysql://x", "postgresql"),
        ("CMB_OUTPUTS", "seg,video", "unknown output"),
        ("CMB_STABLE_AFTER", "-1", "stable_after (CMB_STABLE_AFTER)"),
        ("CMB_TLS_CERT", "/nonexistent.pem", "tls_cert and tls_key must be set together"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match="invalid settings") as e:
        load_settings()
    assert message in str(e.value)


def test_api_key_map() -> None:
    s = load_settings(api_keys=["ris:0123456789abcdef", "ops:fedcba9876543210"])
    assert s.api_key_map() == {"0123456789abcdef": "ris", "fedcba9876543210": "ops"}


def test_config_file_and_round_trip_through_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import settings_environment

    cfg = tmp_path / "cmb.env"
    cfg.write_text("CMB_STABLE_AFTER=7\nCMB_ALLOW_AE=PACS,CT1\n")
    monkeypatch.setenv("CMB_AE_TITLE", "FROM_ENV")
    s = load_settings(config=cfg, dicom_port=104)
    assert (s.stable_after, s.allow_ae, s.ae_title, s.dicom_port) == (
        7,
        ["PACS", "CT1"],
        "FROM_ENV",
        104,
    )
    for key, value in settings_environment(s).items():
        monkeypatch.setenv(key, value)
    assert load_settings() == s
    cfg.write_text("CMB_STABLE_AFTRE=7\n")
    with pytest.raises(SettingsError, match="CMB_STABLE_AFTRE: unknown setting"):
        load_settings(config=cfg)


def test_docs_table_lists_every_setting() -> None:
    from service.settings import Settings

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    missing = [n for n in Settings.model_fields if f"`CMB_{n.upper()}`" not in doc]
    assert missing == []


def test_pipeline_settings_reach_the_pipeline_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from model.pipeline import PipelineOptions
    from service.jobs import pipeline_options

    monkeypatch.setenv("CMB_LOCATION", "mri_synthseg")
    monkeypatch.setenv("CMB_PARCELLATION_MODEL_PATH", str(tmp_path / "parc.onnx"))
    monkeypatch.setenv("CMB_CLASSIFIER", "off")
    options = PipelineOptions(**pipeline_options(load_settings()))
    assert options.location == "mri_synthseg"
    assert options.parcellation_model_path == tmp_path / "parc.onnx"
    assert options.classifier == "off"
    monkeypatch.setenv("CMB_LOCATION", "atlas")
    with pytest.raises(SettingsError, match="location"):
        load_settings()
