"""Synthetic radiology and pathology studies with ground truth (phantoms)."""
