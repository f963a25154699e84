"""data_prep: DICOM, series, slides, de-identification, synthetic studies and datasets."""
