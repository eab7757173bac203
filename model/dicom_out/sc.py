"""Secondary Capture key images with the overlay burned in (opt-in).

For PACS and viewers that cannot show SEG or SR graphics: one RGB image per
CMB, the source slice through its centre with the outline, a marker circle,
"CMB n", the orientation letters and a caption burned into the pixels.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from model.dicom_out.common import SERIES_NUMBERS, Identity, add_ihe_equipment, character_set_of
from model.dicom_out.render import KeyImage, orientation_letters, render_rgb

__all__ = ["build_sc"]

WIDTH_PX = 512


def build_sc(identity: Identity, keys: list[KeyImage]) -> list[hd.sc.SCImage]:
    """One SC image per key image (empty list without findings)."""
    out = []
    for n, key in enumerate(keys, start=1):
        rgb = render_rgb(key, width_px=WIDTH_PX)
        mm_per_px = key.pixels.shape[1] * key.frame.pixel_spacing[1] / rgb.shape[1]
        letters = orientation_letters(key.frame)
        ref = key.frame.dataset
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref,
            pixel_array=rgb,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=identity.uids.series("sc"),
            series_number=SERIES_NUMBERS["sc"],
            sop_instance_uid=identity.uids.instance("sc", n),
            instance_number=n,
            manufacturer="cmb-detect",
            pixel_spacing=(mm_per_px, mm_per_px),  # square: the aspect ratio is kept
            patient_orientation=(letters["right"], letters["bottom"]),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=identity.series_description("sc"),
            specific_character_set=character_set_of(ref),
        )
        sc.BurnedInAnnotation = "YES"
        # General Series Laterality is type 2C for paired body parts; naming the
        # (unpaired) body part tells validators and PACS that it does not apply.
        sc.BodyPartExamined = str(ref.get("BodyPartExamined") or "BRAIN")
        sc.ImageComments = key.caption.replace("\n", "; ")[:10240]
        sc.DerivationDescription = f"{key.finding.name} overlay on the source slice"[:1024]
        sc.SourceImageSequence = [_source_image_item(key)]
        add_ihe_equipment(sc, identity)
        out.append(sc)
    return out


def _source_image_item(key: KeyImage) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = key.frame.dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = key.frame.dataset.SOPInstanceUID
    if key.frame.frame_number is not None:
        item.ReferencedFrameNumber = key.frame.frame_number
    return item
