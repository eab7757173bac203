"""The shipped parcellation model labels a held-out head: a guard against a broken weights file.

docs/location-filter.md has the full held-out table (32 images, mean Dice
0.864 over the large structures); this checks one image of it, on the
production path, so that a replaced or corrupted ``model/weights/parcellation.onnx``
fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.location.parcellation import load_parcellation_model, parcellate_onnx
from model.onnx_model import default_model_path
from model.types import Volume
from training.parcellation.evaluate import LARGE, dice
from training.parcellation.labelmaps import load_label_maps, target_lut
from training.parcellation.synth import Synthesizer


def test_shipped_model_parcellates_a_held_out_t2star_head(
    shared_data: Path, tmp_path: Path
) -> None:
    model = load_parcellation_model(default_model_path("parcellation"), "cpu")
    assert model.metadata.task == "parcellation"
    trained_on = json.loads(model.metadata.trained_on or "{}")
    assert set(trained_on["heldout_subjects"]) == {17, 18, 19, 20}
    assert not set(trained_on["train_subjects"]) & {17, 18, 19, 20}
    (label_map,) = load_label_maps((17,), cache_dir=tmp_path)
    image = Synthesizer().render(label_map.array, np.random.default_rng(0), "t2star", 5.0)
    pred = np.rint(parcellate_onnx(Volume(array=image, affine=label_map.affine), model).array)
    ids = np.asarray(model.metadata.label_ids)
    truth = ids[target_lut()[label_map.array.astype(np.int64)]]
    scores = [dice(pred.astype(np.int64), truth, label) for label in LARGE]
    assert all(s is not None for s in scores)
    assert float(np.mean([s for s in scores if s is not None])) >= 0.8
