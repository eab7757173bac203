from __future__ import annotations

from pathlib import Path

import numpy as np

from cmb.cli import main
from model.types import Volume
from model.volume import read_nifti, write_nifti
from tests.helpers.onnx_factory import make_test_model


def test_cmb_parcellate_writes_a_label_map_on_the_input_grid(tmp_path: Path, capsys) -> None:
    ramp = np.broadcast_to(np.linspace(0, 1, 40, dtype=np.float32), (16, 32, 40)).copy()
    vol = Volume(array=ramp, affine=np.diag([3.0, 1.0, 1.0, 1.0]))
    write_nifti(vol, tmp_path / "in.nii.gz")
    model = make_test_model(tmp_path / "p.onnx", task="parcellation", spacing_mm=(2.0, 2.0, 2.0))
    rc = main(
        [
            "parcellate",
            str(tmp_path / "in.nii.gz"),
            "--out",
            str(tmp_path / "lab.nii.gz"),
            "--model",
            str(model),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    out = read_nifti(tmp_path / "lab.nii.gz")
    assert out.shape == vol.shape
    assert set(np.unique(out.array).astype(int)) <= {0, 2, 3}
    assert "volume_ml" in capsys.readouterr().out
