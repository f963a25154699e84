"""Write synthetic studies as real DICOM files (pydicom): radiographs and CT series.

Radiographs are written as CR or DX, MONOCHROME1 or MONOCHROME2, 12 bits stored in 16, with
PixelSpacing, ViewPosition PA and PatientOrientation ``L\\F`` (rows run towards the patient's
left, columns towards the feet: the PA convention the renderer draws). All identifiers are
synthetic (``PHANTOM^<patient id>``) and every UID is derived from the seed and study id, so the
files are reproducible. Labels are not stored in the file: they live in the JSONL records keyed
by ``study_id``, which is also the file stem and the ``AccessionNumber``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import FileDataset
    from pydicom.uid import UID

    from data_prep.phantoms.ct import CtRender
    from data_prep.phantoms.spec import StudySpec

BASE_DATE = dt.date(2020, 1, 1)


def _uid(*parts: object) -> UID:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _times(rng: np.random.Generator) -> tuple[str, str, str]:
    """Distinct study, series and content times (a de-identifier may compare them)."""
    start = int(rng.integers(7 * 3600, 18 * 3600))
    return tuple(  # type: ignore[return-value]
        f"{(start + d) // 3600:02d}{(start + d) // 60 % 60:02d}{(start + d) % 60:02d}" for d in (0, 67, 131)
    )


def _base_dataset(path: Path, sop_class: str, sop_uid: UID) -> FileDataset:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def write_cxr_dicom(path: Path, spec: StudySpec, pixels: np.ndarray, *, seed: int) -> Path:
    """Write one radiograph as a DICOM file.

    The modality (CR or DX) and photometric interpretation (MONOCHROME1 or MONOCHROME2) are
    drawn from the seed and study index, so a dataset holds both.

    Args:
        path: output file.
        spec: the study's ground truth (ids for UIDs and tags).
        pixels: ``(size, size)`` in [0, 1], MONOCHROME2 meaning.
        seed: dataset seed (for UIDs and the acquisition variety).

    Returns:
        ``path``.

    Raises:
        OSError: if the file cannot be written.
    """
    rng = np.random.default_rng([seed, 7, int(spec.study_id.rsplit("-", 1)[1])])
    modality = "CR" if rng.uniform() < 0.5 else "DX"
    photometric = "MONOCHROME1" if rng.uniform() < 0.5 else "MONOCHROME2"
    sop_class = "1.2.840.10008.5.1.4.1.1.1" if modality == "CR" else "1.2.840.10008.5.1.4.1.1.1.1"
    ds = _base_dataset(path, sop_class, _uid(seed, spec.study_id, "sop"))
    day = BASE_DATE + dt.timedelta(days=int(rng.integers(0, 1500)))
    ds.PatientName = f"PHANTOM^{spec.patient_id}"
    ds.PatientID = spec.patient_id
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid(seed, spec.study_id, "study")
    ds.SeriesInstanceUID = _uid(seed, spec.study_id, "series")
    ds.StudyID = "PH" + spec.study_id[-6:]
    ds.AccessionNumber = spec.study_id
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = day.strftime("%Y%m%d")
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = _times(rng)
    ds.Modality = modality
    ds.Manufacturer = "medvlm phantoms"
    ds.StudyDescription = "CHEST PA (SYNTHETIC PHANTOM)"
    ds.SeriesDescription = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientBirthDate = ""  # type 2: present, empty
    ds.ReferringPhysicianName = ""
    ds.BurnedInAnnotation = "NO"
    if modality == "DX":  # DX Image module: presentation intent, identity rescale, presentation LUT
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ImageLaterality = "U"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    size = pixels.shape[0]
    spacing = 450.0 / size
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    if modality == "DX":
        ds.ImagerPixelSpacing = ds.PixelSpacing
    values = np.round(np.clip(pixels, 0.0, 1.0) * 4095.0).astype(np.uint16)
    if photometric == "MONOCHROME1":
        values = (4095 - values).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.PixelData = values.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(folder: Path, spec: StudySpec, ct: CtRender, *, seed: int) -> list[Path]:
    """Write a CT series, one file per axial slice, in ``folder``.

    Hounsfield units are stored as unsigned values with ``RescaleIntercept = -1024`` and
    ``RescaleSlope = 1``; the window tags hold the region's preset (lung-and-soft-tissue for
    chest, brain for head). Slices share a SeriesInstanceUID and FrameOfReferenceUID and step
    down the patient (``ImagePositionPatient`` z decreasing) with axial orientation.

    Args:
        folder: output folder (created).
        spec: the study's ground truth.
        ct: its rendered series.
        seed: dataset seed (for UIDs).

    Returns:
        The slice files, cranial first.

    Raises:
        OSError: if a file cannot be written.
    """
    from data_prep.phantoms.ct import SLICE_MM, WINDOWS

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 8, int(spec.study_id.rsplit("-", 1)[1])])
    day = BASE_DATE + dt.timedelta(days=int(rng.integers(0, 1500)))
    study_uid, series_uid = _uid(seed, spec.study_id, "study"), _uid(seed, spec.study_id, "series")
    frame_uid = _uid(seed, spec.study_id, "frame")
    times = _times(rng)
    n, rows, cols = ct.hu.shape
    spacing = ct.mm_per_px
    center, width = WINDOWS[ct.region]
    paths = []
    for k in range(n):
        path = folder / f"slice_{k:03d}.dcm"
        ds = _base_dataset(path, "1.2.840.10008.5.1.4.1.1.2", _uid(seed, spec.study_id, "sop", k))
        ds.PatientName = f"PHANTOM^{spec.patient_id}"
        ds.PatientID = spec.patient_id
        ds.PatientSex = "O"
        ds.PatientBirthDate = ""
        ds.ReferringPhysicianName = ""
        ds.BurnedInAnnotation = "NO"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyID = "PH" + spec.study_id[-6:]
        ds.AccessionNumber = spec.study_id
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = day.strftime("%Y%m%d")
        ds.StudyTime, ds.SeriesTime, ds.ContentTime = times
        ds.Modality = "CT"
        ds.Manufacturer = "medvlm phantoms"
        ds.StudyDescription = f"CT {ct.region.upper()} (SYNTHETIC PHANTOM)"
        ds.SeriesDescription = f"AXIAL {ct.region.upper()}"
        ds.BodyPartExamined = ct.region.upper()
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.PatientPosition = "HFS"
        z = -k * SLICE_MM
        ds.ImagePositionPatient = [f"{-cols * spacing / 2:.3f}", f"{-rows * spacing / 2:.3f}", f"{z:.3f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{z:.3f}"
        ds.SliceThickness = f"{SLICE_MM:.1f}"
        ds.SpacingBetweenSlices = f"{SLICE_MM:.1f}"
        ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
        ds.KVP = "120"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = f"{center:.0f}"
        ds.WindowWidth = f"{width:.0f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = (ct.hu[k].astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
