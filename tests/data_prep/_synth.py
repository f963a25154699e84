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
