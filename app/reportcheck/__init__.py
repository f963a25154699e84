"""On-premise batch report checking (``medvlm check-reports``, docs/REPORTCHECK.md).

A hospital exports N studies (a folder per study) with their radiology reports (a CSV or JSONL file
mapping study folder → report text). Every report is checked against itself (rule-based
self-consistency, :mod:`app.reportcheck.consistency`) and against its images (yes/no questions to
the model layer, :mod:`app.reportcheck.verdict`); :mod:`app.reportcheck.job` runs the resumable
batch and writes one JSON line per study, keyed by a pseudonymous study id.

Modules: ``inputs`` (the export), ``consistency`` (rules), ``verdict`` (image checks and the
combined verdict), ``audit`` (interactions in the Store), ``job`` (the batch loop and summary).
"""
