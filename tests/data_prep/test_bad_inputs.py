"""Bad inputs: each gets a one-sentence error and the run goes on; a fuzz test of the DICOM boundary."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import main
from data_prep.dicom import dicom_view, read_dataset
from data_prep.errors import IngestError, LimitExceededError, one_sentence
from data_prep.ingest import IngestOptions, ingest_path
from data_prep.pseudonym import PseudonymKey
from data_prep.types import IngestLimits
from tests.data_prep._files import corpus_file
from tests.data_prep._synth import ct_slice, write


def _bad_folder(tmp: Path) -> dict[str, Path]:
    good = corpus_file("CT_small.dcm")
    raw = good.read_bytes()
    files = {
        "good.dcm": raw,
        "text.dcm": b"hello, I am not DICOM\n" * 10,
        "empty.dcm": b"",
        "truncated.dcm": raw[: len(raw) - 5000],
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / name
        paths[name].write_bytes(data)
    lie = pydicom.dcmread(good)
    lie.Rows = 512  # Rows that lie about the pixel data
    paths["rows_lie.dcm"] = tmp / "rows_lie.dcm"
    lie.save_as(paths["rows_lie.dcm"])
    codec = pydicom.dcmread(good)
    codec.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed
    from pydicom.encaps import encapsulate

    codec.PixelData = encapsulate([b"\x00" * 64])
    codec["PixelData"].VR = "OB"
    paths["mpeg2.dcm"] = tmp / "mpeg2.dcm"
    codec.save_as(paths["mpeg2.dcm"], enforce_file_format=True)
    bomb = ct_slice(0, z=0, instance=1, series_uid="1.2.3.4")
    bomb.Rows = bomb.Columns = 60000  # a tiny file that claims 3.6 gigapixels
    paths["bomb.dcm"] = tmp / "bomb.dcm"
    write(bomb, str(paths["bomb.dcm"]))
    (tmp / "noslide.svs").write_bytes(b"II*\x00" + b"\x00" * 100)
    paths["noslide.svs"] = tmp / "noslide.svs"
    return paths


def test_each_bad_input_gets_a_clear_error_and_the_run_goes_on(
    tmp_path: Path, key: PseudonymKey, capfd: pytest.CaptureFixture[str]
) -> None:
    paths = _bad_folder(tmp_path)
    args = ["ingest", "--json", *map(str, paths.values()), str(tmp_path / "missing.dcm")]
    code = main(args)
    out, err = capfd.readouterr()
    lines = {Path(d["source"]).name: d for d in map(json.loads, out.splitlines())}
    assert code == 1 and "Traceback" not in err
    assert lines["good.dcm"]["status"] == "ok"
    expect = {
        "text.dcm": "not a DICOM file",
        "empty.dcm": "empty",
        "truncated.dcm": "",
        "rows_lie.dcm": "less pixel data",
        "mpeg2.dcm": "no installed decoder",
        "bomb.dcm": "pixel limit",
        "noslide.svs": "not a whole-slide image",
        "missing.dcm": "does not exist",
    }
    for name, fragment in expect.items():
        d = lines[name]
        assert d["status"] == "error", name
        assert fragment in d["error"], (name, d["error"])
        assert d["error"].count(". ") == 0 and d["error"].endswith(".")
    assert main(["ingest", str(paths["good.dcm"])]) == 0
    capfd.readouterr()


def test_usage_errors_exit_2(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ingest"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["ingest", "x.dcm", "--preset", "nonsense"])
    assert info.value.code == 2
    assert main(["ingest", "x.dcm", "--frame", "-1"]) == 2
    capfd.readouterr()


def test_limits_cap_frames_and_bytes(key: PseudonymKey) -> None:
    path = corpus_file("emri_small.dcm")
    ds = read_dataset(path, name=path.name, limits=IngestLimits())
    with pytest.raises(LimitExceededError, match="frame limit"):
        dicom_view(ds, name=path.name, limits=IngestLimits(max_frames=5), key=key)
    with pytest.raises(LimitExceededError, match="byte limit"):
        dicom_view(ds, name=path.name, limits=IngestLimits(max_uncompressed_bytes=1000), key=key)
    with pytest.raises(LimitExceededError):
        read_dataset(path, name=path.name, limits=IngestLimits(max_file_bytes=100))
    with pytest.raises(ValueError):
        IngestLimits(max_pixels=0)


def test_unsafe_zip_members_are_refused(tmp_path: Path, key: PseudonymKey) -> None:
    archive = tmp_path / "evil.zip"
    good = corpus_file("CT_small.dcm").read_bytes()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok/good.dcm", good)
        zf.writestr("../escape.dcm", good)
        zf.writestr("/etc/abs.dcm", good)
        link = zipfile.ZipInfo("link.dcm")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("bomb.dcm", b"\x00" * (5 * 1024 * 1024))  # ratio ~1000:1
    reports = list(ingest_path([archive], options=IngestOptions(key=key)))
    # members are named by position in archive order, never by name
    by = {r.source.removeprefix(f"{archive}#"): r for r in reports}
    assert by["file-1"].status == "ok"
    assert "'..'" in (by["file-2"].error or "")
    assert "absolute" in (by["file-3"].error or "")
    assert "symbolic link" in (by["file-4"].error or "")
    assert (by["file-5"].error or "").startswith(
        "file 5 of the zip (.dcm, 5,242,880 bytes) has a compression"
    )
    assert "zip bomb" in (by["file-5"].error or "")
    assert not (tmp_path.parent / "escape.dcm").exists()
    notzip = tmp_path / "fake.zip"
    notzip.write_bytes(b"PK not really")
    [r] = list(ingest_path([notzip], options=IngestOptions(key=key)))
    assert r.status == "error" and "zip" in (r.error or "")


def test_one_sentence() -> None:
    assert one_sentence(IngestError("x.dcm is bad\n  really")) == "x.dcm is bad really."
    assert one_sentence(KeyError("k")).startswith("unexpected KeyError")
    assert len(one_sentence(IngestError("a" * 1000))) <= 300


def _seed() -> bytes:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    return Path(str(path)).read_bytes() if path else b""


_SEED = _seed()


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=60, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=len(_SEED)),
    pos=st.integers(min_value=0, max_value=max(len(_SEED) - 1, 0)),
    junk=st.binary(min_size=0, max_size=16),
)
def test_fuzz_dicom_boundary_never_crashes(cut: int, pos: int, junk: bytes) -> None:
    """Mutated real files either decode or raise IngestError/ValueError; nothing else escapes."""
    data = bytearray(_SEED[:cut])
    data[pos : pos + len(junk)] = junk
    key = PseudonymKey(b"fuzz-key-0123456789", "t")
    try:
        ds = read_dataset(bytes(data), name="fuzz.dcm", limits=IngestLimits())
        view, _ = dicom_view(ds, name="fuzz.dcm", limits=IngestLimits(), key=key)
        assert view.pixels.dtype.name == "uint8"
    except (IngestError, ValueError) as e:
        assert one_sentence(e)


def test_fuzz_through_ingest_reports(tmp_path: Path, key: PseudonymKey) -> None:
    buf = io.BytesIO(_SEED)
    data = bytearray(buf.getvalue())
    paths = []
    for i, cut in enumerate(range(200, len(data), max(1, len(data) // 12))):
        p = tmp_path / f"cut{i}.dcm"
        p.write_bytes(bytes(data[:cut]))
        paths.append(p)
    reports = list(ingest_path(paths, options=IngestOptions(key=key)))
    assert len(reports) == len(paths)
    assert all(r.status == "error" and r.error for r in reports if r.status != "ok")


def test_frame_option_on_mixed_inputs(key: PseudonymKey, capfd: pytest.CaptureFixture[str]) -> None:
    single, multi = corpus_file("CT_small.dcm"), corpus_file("emri_small.dcm")
    assert main(["ingest", "--json", "--frame", "3", str(single), str(multi)]) == 0
    a, b = (json.loads(line) for line in capfd.readouterr().out.splitlines())
    assert a["status"] == "ok" and any("one frame" in w for w in a["warnings"])
    assert b["status"] == "ok" and "frame 4 of 10" in b["description"]
    assert main(["ingest", "--json", "--frame", "20", str(multi)]) == 1
    [c] = (json.loads(line) for line in capfd.readouterr().out.splitlines())
    assert c["error"] == "frame 20 is out of range for emri_small.dcm, which has 10 frame(s)."


def test_folder_symlinks_are_refused_not_followed(tmp_path: Path, key: PseudonymKey) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(corpus_file("CT_small.dcm").read_bytes())
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "real.dcm").write_bytes(corpus_file("MR_small.dcm").read_bytes())
    (folder / "link.dcm").symlink_to(outside / "secret.dcm")
    (folder / "linkdir").symlink_to(outside, target_is_directory=True)
    (folder / ".hidden.dcm").write_bytes(b"x")
    reports = {r.source: r for r in ingest_path([folder], options=IngestOptions(key=key))}
    # sorted path order, hidden files skipped: link.dcm, linkdir, real.dcm
    assert set(reports) == {f"{folder}#file-{n}" for n in (1, 2, 3)}
    assert reports[f"{folder}#file-3"].status == "ok"
    assert (
        reports[f"{folder}#file-1"].error == "file 1 of the folder (.dcm) is a symbolic link and was skipped."
    )
    assert "symbolic link" in (reports[f"{folder}#file-2"].error or "")


def test_compressed_frame_larger_than_header_is_refused_before_decoding(key: PseudonymKey) -> None:
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from data_prep.codec_sniff import j2k_size, jpeg_size
    from data_prep.errors import PixelDataError

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4000, 3000), dtype=np.uint8)).save(buf, format="JPEG")  # ~60 kB
    assert jpeg_size(buf.getvalue()) == (4000, 3000)
    assert j2k_size(b"\xff\x4f\xff\x51" + b"\x00" * 4 + struct.pack(">IIII", 640, 480, 0, 0)) == (480, 640)
    ds = ct_slice(0, z=0, instance=1, series_uid="1.2.3")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    with pytest.raises(PixelDataError, match="declares 16x16"):
        dicom_view(ds, name="liar.dcm", limits=IngestLimits(), key=key)
    with pytest.raises(LimitExceededError, match="pixel limit"):
        dicom_view(ds, name="liar.dcm", limits=IngestLimits(max_pixels=1_000_000), key=key)


@pytest.mark.parametrize("cut", [1000, 3000, 20000])
def test_truncated_files_are_named_truncated_not_missing_attributes(
    cut: int, tmp_path: Path, key: PseudonymKey
) -> None:
    # before: "has no pixel data" (cut 1000/3000) although the file simply ends early
    path = tmp_path / "t.dcm"
    path.write_bytes(corpus_file("CT_small.dcm").read_bytes()[:cut])
    [r] = list(ingest_path([path], options=IngestOptions(key=key)))
    assert r.status == "error" and "truncated or corrupt" in (r.error or ""), r.error
    assert "no pixel data" not in (r.error or "")


def test_a_complete_file_is_not_called_truncated(key: PseudonymKey) -> None:
    path = corpus_file("CT_small.dcm")
    ds = read_dataset(path, name=path.name, limits=IngestLimits())
    assert "PixelData" in ds
