"""No patient name, ID or birth date in any log line of the whole suite (runs last).

Besides everything the suite logged so far, it sends one instance whose SOP
Class UID length is stretched over the following elements (patient name
included): the SCP must answer with a failure status and log no patient data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import _config

from service.runtime import Service
from service.scu import associate
from service.settings import Settings
from tests.reliability.conftest import scan_logs, scu_ae
from tests.reliability.fuzz import elements, encode, meta_end
from tests.service.dicom_factory import mr_dataset


def test_no_patient_data_in_any_log_line(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = services(make_settings())
    ds = mr_dataset("2.25.77", "2.25.77.1", 0, size=8)
    raw = bytearray(encode(ds))
    els = elements(bytes(raw), meta_end(bytes(raw)))
    sop_class = next(e for e in els if (e.group, e.elem) == (0x0008, 0x0016))
    name = next(e for e in els if (e.group, e.elem) == (0x0010, 0x0010))
    # The SOP Class UID now "contains" everything up to and including the patient name.
    struct.pack_into(
        "<H", raw, sop_class.length_offset, name.offset + 8 + name.length - (sop_class.offset + 8)
    )
    path = tmp_path / "stretched.dcm"
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assoc = associate(scu_ae(), "127.0.0.1", svc.dicom_port or 0, ae_title="CMB_AI")
    assert assoc.is_established
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status != 0x0000
    texts, leaks = scan_logs()
    assert texts
    assert not leaks, f"{len(leaks)} log line(s) with patient data, e.g. {leaks[0][:300]}"
