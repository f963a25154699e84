"""De-identification: the real chest radiograph leaves no identifying value in the output bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from app.cli import main
from data_prep.deid import deidentify_dataset, deidentify_path, load_profile
from data_prep.errors import DeidError
from data_prep.pseudonym import PseudonymKey
from tests.data_prep._files import corpus_file

UID_RE = re.compile(r"^2\.25\.[1-9][0-9]{0,38}$")


def _identifying_values(ds: Dataset) -> set[str]:
    values = set()
    for elem in ds.iterall():
        if elem.VR in ("PN", "DA", "DT") and elem.value:
            values.add(str(elem.value))
        if elem.VR == "UI" and elem.value and str(elem.value) not in UID_dictionary:
            values.add(str(elem.value))
    for kw in (
        "PatientID",
        "InstitutionName",
        "AccessionNumber",
        "StudyID",
        "StationName",
        "DeviceSerialNumber",
    ):
        if ds.get(kw):
            values.add(str(ds.get(kw)))
    values.add(str(ds.file_meta.MediaStorageSOPInstanceUID))
    return {v for v in values if len(v) >= 4}


def test_cli_deid_on_rg1_uncr_leaves_no_identifying_bytes(
    key: PseudonymKey, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    src = corpus_file("RG1_UNCR.dcm")
    original = pydicom.dcmread(src)
    secrets = _identifying_values(original)
    assert {"CompressedSamples^RG1", "9RG1", "19400305", "Philips Medical Systems Hamburg"} <= secrets
    code = main(["deid", str(src), str(tmp_path / "out"), "--json"])
    out, err = capfd.readouterr()
    assert code == 0, out
    report = json.loads(out.strip())
    assert report["status"] == "ok"
    written = Path(report["output"])
    data = written.read_bytes()
    for value in secrets:
        assert value.encode() not in data, f"{value!r} survived"
        assert value not in out and value not in err
    assert data[:128] == b"\x00" * 128 and data[128:132] == b"DICM"
    ds = pydicom.dcmread(written)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.DeidentificationMethod
    assert UID_RE.match(ds.StudyInstanceUID) and UID_RE.match(ds.SOPInstanceUID)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert not any(e.tag.is_private for e in ds.iterall())
    assert ds.pixel_array.shape == (1955, 1841)  # the image itself survives
    assert str(original.PatientName) not in str(written)


def test_uids_are_consistent_within_a_study_and_dates_shift(key: PseudonymKey) -> None:
    ds = pydicom.dcmread(corpus_file("CT_small.dcm"))
    a = deidentify_dataset(ds, key=key).dataset
    ds2 = ds.copy()
    ds2.SOPInstanceUID = ds.SOPInstanceUID + ".2"
    b = deidentify_dataset(ds2, key=key).dataset
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    other = deidentify_dataset(ds, key=PseudonymKey(b"another-key-0123456789", "t")).dataset
    assert other.StudyInstanceUID != a.StudyInstanceUID
    assert a.SOPClassUID == ds.SOPClassUID  # registered UIDs are kept
    assert ds.PatientName and str(ds.PatientName) != ""  # the input was not modified
    shifted = deidentify_dataset(ds, key=key, date_shift_days=-10)
    assert shifted.dataset.StudyDate == "20040109"  # 2004-01-19 minus 10 days
    assert shifted.dataset.PatientBirthDate == ""
    codes = [c.CodeValue for c in shifted.dataset.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]
    assert a.get("StudyDate") in ("", None)
    # a one-day shift may turn one date into another original date: still accepted
    two_days = ds.copy()
    two_days.AcquisitionDate = "20040120"
    one = deidentify_dataset(two_days, key=key, date_shift_days=1).dataset
    assert one.StudyDate == "20040120" and one.AcquisitionDate == "20040121"
    with pytest.raises(DeidError, match="0 days"):
        deidentify_dataset(ds, key=key, date_shift_days=0)


def test_nested_names_private_tags_and_burned_in_warning(key: PseudonymKey) -> None:
    ds = pydicom.dcmread(corpus_file("CT_small.dcm"))
    item = Dataset()
    item.add_new(0x0040A123, "PN", "Nested^Person")  # Person Name (D)
    item.add_new(0x00081070, "PN", "Operator^Nested")  # Operators' Name, inside a sequence
    item.add_new(0x00091001, "LO", "private secret")
    ds.add_new(0x00081111, "SQ", [item])  # Referenced Performed Procedure Step Sequence
    ds.add_new(0x00211010, "LO", "top private")
    ds.BurnedInAnnotation = "YES"
    result = deidentify_dataset(ds, key=key)
    text = str(result.dataset)
    for secret in ("Nested^Person", "Operator^Nested", "private secret", "top private"):
        assert secret not in text
    assert any("BurnedInAnnotation" in w for w in result.warnings)
    assert result.actions.get("private", 0) >= 1
    us = deidentify_dataset(pydicom.dcmread(corpus_file("US1_UNCR.dcm")), key=key)
    assert any("burned-in" in w for w in us.warnings)


def test_fails_closed_and_writes_nothing(key: PseudonymKey, tmp_path: Path) -> None:
    good = corpus_file("CT_small.dcm")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(good.read_bytes())
    no_sop = pydicom.dcmread(good)
    del no_sop.SOPInstanceUID
    no_sop.save_as(folder / "b.dcm")
    (folder / "c.dcm").write_bytes(b"not dicom at all")
    reports = list(deidentify_path(folder, tmp_path / "out", key=key))
    a, b, c = (f"{folder}#file-{n}" for n in (1, 2, 3))  # files by position, never by name
    status = {r.source: r for r in reports}
    assert status[a].status == "ok"
    assert status[b].status == "error" and "SOPInstanceUID" in (status[b].error or "")
    assert status[c].status == "error" and "not a DICOM file" in (status[c].error or "")
    assert (status[c].error or "").startswith("file 3 of the folder (.dcm, 16 bytes) is not")
    written = list((tmp_path / "out").rglob("*"))
    assert [p for p in written if p.is_file()] == [Path(status[a].output or "")]
    compressed = pydicom.dcmread(corpus_file("JPEG2000.dcm"))
    compressed.file_meta = pydicom.dataset.FileMetaDataset()
    with pytest.raises(DeidError, match="no transfer syntax"):
        deidentify_dataset(compressed, key=key)
    in_memory = pydicom.dcmread(good)
    in_memory.file_meta = pydicom.dataset.FileMetaDataset()  # e.g. built in memory
    result = deidentify_dataset(in_memory, key=key)
    assert result.dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert any("Explicit VR Little Endian" in w for w in result.warnings)


def test_profile_table_covers_the_basic_profile() -> None:
    profile = load_profile()
    assert len(profile.exact) >= 290
    expected = {
        0x00100010: "Z",  # PatientName
        0x00100020: "Z",  # PatientID
        0x00080080: "D",  # InstitutionName (X/Z/D)
        0x0020000D: "U",  # StudyInstanceUID
        0x00081030: "X",  # StudyDescription
        0x0040A123: "D",  # Person Name
        0x00080023: "D",  # ContentDate (Z/D)
    }
    for tag, action in expected.items():
        assert profile.action_for(tag) == action
    assert profile.action_for(0x60023000) == "X"  # overlay data in any 60xx group
    assert profile.action_for(0x00280010) is None  # Rows: kept


def test_cli_deid_zip_of_a_series_keeps_the_study_together(
    key: PseudonymKey, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import zipfile

    from tests.data_prep._synth import ct_slice

    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            ds = ct_slice(i * 10, z=float(i), instance=i + 1, series_uid="1.2.826.0.1.3680043.8.498.77")
            ds.StudyDate = "20200115"
            ds.SeriesDate = "20200115"
            path = tmp_path / f"DOE_JOHN_{i}.dcm"  # names in file names must not reach the output
            ds.save_as(path, enforce_file_format=True)
            zf.write(path, f"patient/{path.name}")
    assert main(["deid", str(archive), str(tmp_path / "out"), "--date-shift-days", "30", "--json"]) == 0
    lines = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    assert len(lines) == 3 and {d["status"] for d in lines} == {"ok"}
    outputs = [pydicom.dcmread(d["output"]) for d in lines]
    assert (
        len({ds.StudyInstanceUID for ds in outputs}) == 1
        and len({ds.SeriesInstanceUID for ds in outputs}) == 1
    )
    assert {ds.StudyDate for ds in outputs} == {"20200214"}
    assert all(
        "DOE" not in d["output"] and "Test^Patient" not in str(ds)
        for d, ds in zip(lines, outputs, strict=True)
    )
    assert len({Path(d["output"]).parent for d in lines}) == 1


def test_numeric_identifier_inside_a_dummy_time_is_not_a_leak(key: PseudonymKey) -> None:
    # A six-digit numeric StudyID equals the digits of the profile's dummy times ("000000.00");
    # only an exact match counts for date/time/number values, so such a study is not refused.
    ds = pydicom.dcmread(corpus_file("CT_small.dcm"))
    ds.StudyID = "000000"
    result = deidentify_dataset(ds, key=key)
    assert all(str(e.value) != "000000" for e in result.dataset.iterall() if e.keyword == "StudyID")
    # an element the profile keeps that still holds the identifier is refused
    ds.ConvolutionKernel = "K000000"
    with pytest.raises(DeidError, match="survived"):
        deidentify_dataset(ds, key=key)


def test_deid_is_idempotent_and_skips_out_inside_in(
    key: PseudonymKey, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("RG1_UNCR.dcm", "CT_small.dcm"):
        (src / name).write_bytes(corpus_file(name).read_bytes())
    out = src / "out"  # OUT inside IN
    assert main(["deid", str(src), str(out), "--json"]) == 0
    first = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    # a re-run must not read its own earlier output back in
    assert main(["deid", str(src), str(out), "--json"]) == 0
    second = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    assert len(first) == len(second) == 2
    assert sorted(d["output"] for d in first) == sorted(d["output"] for d in second)
    # de-identifying de-identified output works: ANONYMIZED (LO/SH) is the profile's own value
    assert main(["deid", str(out), str(tmp_path / "again"), "--json"]) == 0, capfd.readouterr().out
    again = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    assert [d["status"] for d in again] == ["ok", "ok"]
    ds = pydicom.dcmread(again[0]["output"])
    assert ds.PatientIdentityRemoved == "YES"


def test_anonymized_filler_is_exempt_but_originals_are_not(key: PseudonymKey) -> None:
    ds = pydicom.dcmread(corpus_file("CT_small.dcm"))
    ds.InstitutionName = "ANONYMIZED"  # as left by an earlier run
    ds.StationName = "ANONYMIZED"
    deidentify_dataset(ds, key=key)  # no DeidError
    ds.InstitutionName = "StElsewhereGen"
    ds.ConvolutionKernel = "StElsewhereGen"  # kept by the profile: the original survives
    with pytest.raises(DeidError, match="survived"):
        deidentify_dataset(ds, key=key)


@pytest.mark.parametrize("out_name", ["x.dcm", "existing-file"])
def test_deid_out_that_is_or_looks_like_a_file_is_a_usage_error(
    out_name: str, key: PseudonymKey, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / out_name
    if out_name == "existing-file":
        target.write_text("keep")
    assert main(["deid", str(corpus_file("CT_small.dcm")), str(target)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "OUT must be a folder" in err
    assert not target.is_dir()


@pytest.mark.parametrize("cut", [1000, 3000, 20000])
def test_deid_of_a_truncated_file_says_truncated(
    cut: int, key: PseudonymKey, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # 1000: inside a sequence value; 3000: inside an element header; 20000: inside the pixel data
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(corpus_file("CT_small.dcm").read_bytes()[:cut])
    out = tmp_path / "out"
    assert main(["deid", str(trunc), str(out), "--json"]) == 1
    [line] = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    assert line["status"] == "error" and "truncated or corrupt" in line["error"]
    assert not out.exists() or not any(out.rglob("*.dcm"))
