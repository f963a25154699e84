"""load_views on folders and zips: one study only, and members left out are said, by position only."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from data_prep.errors import IngestError
from data_prep.ingest import load_views
from data_prep.pseudonym import PseudonymKey, study_pseudonym
from tests.data_prep._files import corpus_file

# names that look like PHI: none of them may appear in a warning or an error
PHI_NAMES = ("SMITH^JANE_MRN12345.dcm", "1.3.6.1.4.1.5962.99.20040826.dcm", "junk_DOE_JOHN.bin")
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def _assert_phi_free(texts: list[str]) -> None:
    for text in texts:
        for name in PHI_NAMES:
            assert Path(name).stem not in text, text
        assert "SMITH" not in text and "DOE" not in text and "5962" not in text


def test_a_folder_with_two_studies_is_refused(tmp_path: Path, key: PseudonymKey) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(corpus_file("CT_small.dcm"), folder / PHI_NAMES[0])
    shutil.copy(corpus_file("MR_small.dcm"), folder / PHI_NAMES[1])  # another patient's study
    (folder / PHI_NAMES[2]).write_bytes(b"not an image at all")
    with pytest.raises(IngestError, match=r"holds 2 studies; ask about one of them") as info:
        load_views(folder, key=key)
    _assert_phi_free([str(info.value)])
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, f"patient/{p.name}")
    with pytest.raises(IngestError, match=r"holds 2 studies"):
        load_views(archive, key=key)


def test_skipped_members_become_warnings_without_names(tmp_path: Path, key: PseudonymKey) -> None:
    folder = tmp_path / "one-study"
    folder.mkdir()
    raw = corpus_file("CT_small.dcm").read_bytes()
    (folder / PHI_NAMES[0]).write_bytes(raw)
    (folder / PHI_NAMES[1]).write_bytes(raw[:-5000])  # the same study, truncated
    (folder / PHI_NAMES[2]).write_bytes(b"not an image at all")
    views = load_views(folder, key=key)
    assert views and all(v.study_id == study_pseudonym(key, CT_STUDY) for v in views)
    warnings = list(views[0].warnings)
    skipped = [w for w in warnings if "was left out" in w]
    assert len(skipped) == 2, warnings
    # sorted order: 1.3.6... (truncated), SMITH... (good), junk... (not DICOM)
    assert "file 1 of 3 was left out because it is truncated or corrupt." in skipped
    assert "file 3 of 3 was left out because it is not a DICOM file or a supported image." in skipped
    assert all(set(skipped) <= set(v.warnings) for v in views)
    _assert_phi_free(warnings)


def test_refused_zip_members_become_warnings(tmp_path: Path, key: PseudonymKey) -> None:
    archive = tmp_path / "evil.zip"
    good = corpus_file("CT_small.dcm").read_bytes()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/SMITH^JANE_MRN12345.dcm", good)
        zf.writestr("../DOE_JOHN.dcm", good)
        zf.writestr("bomb.dcm", b"\x00" * (5 * 1024 * 1024))  # ratio ~1000:1
    views = load_views(archive, key=key)
    skipped = [w for w in views[0].warnings if "was left out" in w]
    assert len(skipped) == 2 and all("refused as unsafe" in w for w in skipped), skipped
    _assert_phi_free(list(views[0].warnings))


def test_a_clean_folder_has_no_skip_warnings(tmp_path: Path, key: PseudonymKey) -> None:
    folder = tmp_path / "clean"
    folder.mkdir()
    shutil.copy(corpus_file("CT_small.dcm"), folder / "a.dcm")
    views = load_views(folder, key=key)
    assert views and not any("left out" in w for v in views for w in v.warnings)
