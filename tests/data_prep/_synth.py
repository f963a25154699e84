"""Small synthetic DICOM objects for tests (real-file tests use the pydicom corpus instead)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_slice(
    value_hu: int,
    *,
    z: float | None,
    instance: int,
    series_uid: str,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    size: int = 16,
) -> Dataset:
    """A CT slice whose every pixel is ``value_hu`` (stored with intercept -1024), at height ``z``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "PID-12345"
    ds.InstanceNumber = instance
    if z is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    arr = np.full((size, size), value_hu + 1024, dtype=np.uint16)
    arr[0, 0] = value_hu + 1024 + 1  # not perfectly flat
    ds.PixelData = arr.tobytes()
    return ds


def write(ds: Dataset, path: str) -> None:
    """Save as a DICOM file with preamble and file meta."""
    ds.save_as(path, enforce_file_format=True)


def write_dicom_wsi(
    folder: str, image: np.ndarray, *, mpp: float = 0.5, tile: int = 128, levels: int = 2
) -> None:
    """Write a minimal TILED_FULL DICOM whole-slide pyramid (one JPEG-baseline instance per level)."""
    import io
    from pathlib import Path

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    for level in range(levels):
        img = image[:: 2**level, :: 2**level]
        h, w = img.shape[:2]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
        ds.Modality = "SM"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        ds.InstanceNumber = level + 1
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
        ds.Rows = ds.Columns = tile
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        lmpp = mpp * 2**level
        ds.ImagedVolumeWidth, ds.ImagedVolumeHeight, ds.ImagedVolumeDepth = (
            w * lmpp / 1000,
            h * lmpp / 1000,
            0.001,
        )
        ds.TotalPixelMatrixFocalPlanes = ds.NumberOfOpticalPaths = 1
        path, colour, kind = Dataset(), Dataset(), Dataset()
        path.OpticalPathIdentifier = "1"
        colour.CodeValue, colour.CodingSchemeDesignator, colour.CodeMeaning = (
            "414298005",
            "SCT",
            "Full Spectrum",
        )
        kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning = (
            "111744",
            "DCM",
            "Brightfield illumination",
        )
        path.IlluminationColorCodeSequence, path.IlluminationTypeCodeSequence = [colour], [kind]
        ds.OpticalPathSequence = [path]
        shared, measures = Dataset(), Dataset()
        measures.PixelSpacing = [lmpp / 1000, lmpp / 1000]
        measures.SliceThickness = 0.001
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
        ds.ContainerIdentifier = "C1"
        frames = []
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                t = np.full((tile, tile, 3), 255, np.uint8)
                part = img[ty : ty + tile, tx : tx + tile]
                t[: part.shape[0], : part.shape[1]] = part
                buf = io.BytesIO()
                Image.fromarray(t).save(buf, format="JPEG", quality=90)
                frames.append(buf.getvalue())
        ds.NumberOfFrames = len(frames)
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds.save_as(Path(folder) / f"level{level}.dcm", enforce_file_format=True)
