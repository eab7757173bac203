"""generate_case: one synthetic SWI or T2* case with microbleeds, veins, mimics and truth.

Stages draw from independent child generators of ``SeedSequence(seed)``, so the
same seed gives the same case bit for bit and a change inside one stage does not
shift the random numbers of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from model.types import Volume
from training.synth.acquisition import finish, kspace_effects, make_grid, sample_tissue
from training.synth.anatomy import (
    TRAIN_SUBJECTS,
    TYPICAL_PITCH_DEG,
    VAL_SUBJECTS,
    check_subject,
    load_subject,
)
from training.synth.contrast import render_tissue, sample_tissue_means
from training.synth.deform import deform_subject, head_pose_matrix, rotation_matrix
from training.synth.dipole import SusceptibilityObject, object_factor, visible_factor
from training.synth.iron import render_iron_nuclei
from training.synth.mimics import MimicObject, make_mimics
from training.synth.params import RANDOM_CONTRAST_SHARE, SynthParams, sample_params
from training.synth.placement import Anatomy, Site, place_microbleeds
from training.synth.vessels import cortical_veins, deep_veins, medullary_veins, render_veins

B0_SCANNER = np.array([0.0, 0.0, 1.0])  # B0 along the scanner bore = LPS z for a supine head


@dataclass
class SynthCase:
    """One generated case: image and instance labels on the acquisition grid, and its record.

    ``anatomy`` is the deformed label map (FreeSurfer labels) on its own 1 mm
    grid, with an affine into the same scanner LPS space as ``image``.
    """

    case_id: str
    image: Volume
    labels: Volume
    record: dict[str, Any]
    params: SynthParams
    anatomy: Volume | None = None


def _random_rotation(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return np.asarray(q)


def _transform(m: npt.NDArray[np.float64], p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(p, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def _cmb_objects(
    sites: list[Site],
    rng: np.random.Generator,
    params: SynthParams,
    to_scanner: npt.NDArray[np.float64],
) -> list[SusceptibilityObject]:
    objs = []
    lo, hi = params.cmb_chi_range_ppm
    for site in sites:
        r = site.radius_mm
        if rng.random() < 0.5:
            e = rng.uniform(0.7, 1.0, 3)
            e = e / np.prod(e) ** (1.0 / 3.0)  # same volume as the sphere of radius r
        else:
            e = np.ones(3)
        rot = _random_rotation(rng)
        chi = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        c = _transform(to_scanner, site.lps)
        objs.append(
            SusceptibilityObject(
                center_lps=(float(c[0]), float(c[1]), float(c[2])),
                semi_axes_mm=(float(r * e[0]), float(r * e[1]), float(r * e[2])),
                rotation=tuple(tuple(float(v) for v in row) for row in rot),
                chi_ppm=chi,
                interior_signal=float(rng.uniform(0.0, 0.1)),
            )
        )
    return objs


def _truth_component(visible: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.bool_]:
    """Rater rule: voxels with lesion-caused signal loss >= threshold, connected to the darkest."""
    mask = visible <= 1.0 - threshold
    if not mask.any():
        return mask
    lab, _ = ndi.label(mask)
    darkest = np.unravel_index(int(np.argmin(visible)), visible.shape)
    keep = lab[darkest]
    return np.asarray(lab == keep) if keep else np.zeros_like(mask)


def _apparent_diameter(mask: npt.NDArray[np.bool_], spacing: npt.NDArray[np.float64]) -> float:
    """In-plane diameter a rater measures: the largest slice's equivalent-circle diameter."""
    if not mask.any():
        return 0.0
    area = float(mask.sum(axis=(1, 2)).max()) * float(spacing[1] * spacing[2])
    return 2.0 * float(np.sqrt(area / np.pi))


def _case_rngs(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(9)]


def _draw_subject(r_par: np.random.Generator, split: str) -> int:
    pool = TRAIN_SUBJECTS if split == "train" else VAL_SUBJECTS
    return int(pool[int(r_par.integers(len(pool)))])


def drawn_subject(seed: int, split: str) -> int:
    """The subject ``generate_case(seed, split=split)`` uses when none is given."""
    return _draw_subject(_case_rngs(seed)[0], split)


def generate_case(
    seed: int,
    *,
    subject: int | None = None,
    sequence: str = "mixed",
    split: str = "train",
    n_cmbs: int | None = None,
    params_override: dict[str, Any] | None = None,
    random_contrast: float = RANDOM_CONTRAST_SHARE,
) -> SynthCase:
    """Generate one case (deterministic in all arguments)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rngs = _case_rngs(seed)
    r_par, r_def, r_con, r_vei, r_cmb, r_mim, r_acq, r_noi, r_iro = rngs
    if subject is None:
        subject = _draw_subject(r_par, split)
    check_subject(subject, split)
    p = sample_params(
        r_par,
        seed=int(seed),
        subject=subject,
        split=split,
        sequence=sequence,
        n_cmbs=n_cmbs,
        override=params_override,
        random_contrast=random_contrast,
    )
    subj = load_subject(subject)
    labels, mars = deform_subject(
        subj,
        r_def,
        flip_lr=p.flip_lr,
        elastic_sigma_mm=p.elastic_sigma_mm,
        elastic_spacing_mm=p.elastic_spacing_mm,
    )
    anat = Anatomy(labels, mars, subj.affine)
    p.pitch_correction_deg = TYPICAL_PITCH_DEG - subj.pitch_deg
    m = head_pose_matrix(p.head_rotation_deg, p.head_scale, p.head_shear) @ rotation_matrix(
        (p.pitch_correction_deg, 0.0, 0.0)
    )
    to_scanner = np.eye(4)
    to_scanner[:3, :3] = m
    to_scanner[:3, 3] = anat.centre - m @ anat.centre
    b0_subject = m.T @ B0_SCANNER
    b0_subject /= np.linalg.norm(b0_subject)

    # Tissue, iron nuclei and veins on the 1 mm subject grid.
    if not p.tissue_means:
        p.tissue_means = sample_tissue_means(r_con, p.sequence, p.contrast_mode)
    tissue = render_tissue(labels, p.tissue_means, r_con, p.texture_amplitude)
    render_iron_nuclei(anat, r_iro, tissue, p.sequence)
    veins = medullary_veins(anat, r_vei, p.n_medullary_veins) + cortical_veins(
        anat, r_vei, p.n_cortical_veins
    )
    if p.deep_veins:
        veins += deep_veins(anat, r_vei)
    tissue *= render_veins(
        labels.shape,
        subj.affine,
        veins,
        b0_dir_subject=b0_subject,
        field_strength_t=p.field_strength_t,
        echo_time_ms=p.echo_time_ms,
        chi_ppm=p.vein_chi_ppm,
        phase_mask_power=p.phase_mask_power,
    )

    # Acquisition grid over the posed brain.
    brain_idx = np.argwhere(anat.parenchyma[::3, ::3, ::3]) * 3
    grid = make_grid(
        _transform(to_scanner, anat.to_lps(brain_idx)),
        pixel_spacing_mm=p.pixel_spacing_mm,
        slice_thickness_mm=p.slice_thickness_mm,
        slice_gap_mm=p.slice_gap_mm,
        oblique_deg=p.oblique_deg,
        profile=p.slice_profile,
        n_subslices=p.n_subslices,
    )
    image = sample_tissue(tissue, subj.affine, to_scanner, grid).astype(np.complex64)
    del tissue

    # Microbleeds.
    dlo, dhi = p.cmb_diameter_range_mm
    diameters = list(np.exp(r_cmb.uniform(np.log(dlo), np.log(dhi), p.n_cmbs)))
    radii = [float(d) / 2 for d in diameters]
    sites = place_microbleeds(
        anat, r_cmb, p.n_cmbs, p.cmb_pattern if p.n_cmbs else "scattered", radii
    )
    objects = _cmb_objects(sites, r_cmb, p, to_scanner)
    truth = np.zeros(grid.shape, dtype=np.int16)
    best = np.ones(grid.shape, dtype=np.float32)
    spacing = grid.spacing
    cmbs: list[dict[str, Any]] = []
    subvisible: list[dict[str, Any]] = []
    next_label = 1
    for site, obj in zip(sites, objects, strict=True):
        out = object_factor(obj, grid, B0_SCANNER, p.field_strength_t, p.echo_time_ms)
        if out is None:
            continue
        sl, factor = out
        image[sl] *= factor
        vis = visible_factor(factor, p.phase_mask_power)
        mask = _truth_component(vis, p.truth_threshold)
        entry: dict[str, Any] = {
            "center_lps_mm": [round(v, 3) for v in obj.center_lps],
            "diameter_true_mm": round(2 * obj.equivalent_radius_mm, 3),
            "semi_axes_mm": [round(v, 3) for v in obj.semi_axes_mm],
            "chi_ppm": round(obj.chi_ppm, 4),
            "region": site.region,
            "region_label": site.region_label,
            "mars": site.mars,
            "lobe": site.lobe,
            "contrast": round(float(1.0 - vis.min()), 4),
        }
        if not mask.any():
            entry["diameter_apparent_mm"] = 0.0
            subvisible.append(entry)
            continue
        sub_best = best[sl]
        claim = mask & (vis < sub_best)
        sub_truth = truth[sl]
        sub_truth[claim] = next_label
        sub_best[claim] = vis[claim]
        entry["label"] = next_label
        entry["diameter_apparent_mm"] = round(_apparent_diameter(mask, spacing), 3)
        entry["contrast"] = round(float(1.0 - vis[mask].mean()), 4)
        entry["n_voxels"] = int(mask.sum())
        cmbs.append(entry)
        next_label += 1
    # Final voxel counts; an instance that lost all its voxels to a darker neighbour
    # is listed with the sub-visible ones (it is inside the neighbour's label).
    counts = np.bincount(truth.ravel(), minlength=next_label)
    kept = []
    for c in cmbs:
        c["n_voxels"] = int(counts[c["label"]])
        if c["n_voxels"]:
            kept.append(c)
        else:
            subvisible.append({**c, "merged_into_neighbour": True})
    cmbs = kept

    # Mimics (hard negatives): calcifications, flow voids, air/bone, cavernomas, haemorrhages.
    mimic_records: list[dict[str, Any]] = []
    mimic_objs: list[MimicObject] = make_mimics(anat, r_mim, p.mimics, to_scanner)
    for mo in mimic_objs:
        out = object_factor(
            mo.obj,
            grid,
            B0_SCANNER,
            p.field_strength_t,
            p.echo_time_ms,
            n_inplane=2 if max(mo.obj.semi_axes_mm) > 4 else None,
        )
        if out is None:
            continue
        sl, factor = out
        image[sl] *= factor
        mimic_records.append(mo.record())
    mimic_records += [v.record(to_scanner) for v in veins]

    image = kspace_effects(
        image,
        r_acq,
        kspace_fraction=p.kspace_fraction,
        ghosting=p.ghosting,
        phase_encode_axis=p.phase_encode_axis,
    )
    magnitude = finish(
        image,
        r_noi,
        bias=p.bias,
        snr=p.snr,
        phase_mask_power=p.phase_mask_power,
        intensity_scale=p.intensity_scale,
    )
    case_id = f"synth-{p.split}-{int(seed):08d}"
    acquisition = {
        "sequence": p.sequence,
        "field_strength_t": p.field_strength_t,
        "echo_time_ms": round(p.echo_time_ms, 3),
        "slice_thickness_mm": round(p.slice_thickness_mm, 3),
        "slice_gap_mm": round(p.slice_gap_mm, 3),
        "pixel_spacing_mm": [round(v, 4) for v in p.pixel_spacing_mm],
        "acquisition_type": p.acquisition_type,
        "manufacturer": p.manufacturer,
        "snr": round(p.snr, 3),
        "bias": round(p.bias, 4),
        **{k: v for k, v in p.to_json().items() if k not in ("tissue_means",)},
        "tissue_means": {k: round(v, 4) for k, v in p.tissue_means.items()},
    }
    record: dict[str, Any] = {
        "case_id": case_id,
        "image": f"images/{case_id}.nii.gz",
        "label": f"labels/{case_id}.nii.gz",
        "subject": subject,
        "split": p.split,
        "source": "synthetic",
        "acquisition": acquisition,
        "cmbs": cmbs,
        "subvisible_cmbs": subvisible,
        "mimics": mimic_records,
    }
    image_vol = Volume(array=magnitude, affine=grid.affine.copy())
    label_vol = Volume(array=truth, affine=grid.affine.copy())  # type: ignore[arg-type]
    anatomy_vol = Volume(array=labels, affine=to_scanner @ subj.affine)  # type: ignore[arg-type]
    return SynthCase(
        case_id=case_id,
        image=image_vol,
        labels=label_vol,
        record=record,
        params=p,
        anatomy=anatomy_vol,
    )
