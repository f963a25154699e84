"""De-identification of DICOM by the PS3.15 Annex E Basic Application Level Confidentiality Profile.

The profile's attribute table ships as ``deid_profile.csv`` (tag, keyword, name, action) and is
applied recursively to every nested sequence item. Actions:

``D`` dummy value of the same VR; ``Z`` empty value; ``X`` remove; ``K`` keep; ``C`` clean, which
here removes (free text cannot be cleaned reliably); ``U`` replace the UID by a keyed hash.
Compound actions choose the variant that keeps the object valid: ``Z/D``, ``X/D`` and ``X/Z/D`` →
D; ``X/Z`` → Z; ``X/Z/U*`` → keep the sequence and replace its UIDs.

Beyond the table, and failing closed: every private element is removed; every UID that is not a
registered DICOM UID is remapped (``2.25.<keyed hash>``, stable across files and runs with the
same key, so a study stays a study); every other person name is emptied; every other date is
removed, or with ``date_shift_days`` every date (except birth dates) is shifted;
PatientIdentityRemoved, DeidentificationMethod and its code sequence (DCM 113100, plus 113107
when dates are shifted) are set; the 128-byte preamble is zeroed (CVE-2019-11687). Afterwards the
result is checked: no private tag, no non-empty person name and none of the original identifying
values may remain, or the data set is rejected (:class:`DeidError`) and nothing is written.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from data_prep.dicom import BURNED_IN_PRONE_MODALITIES, captured_warnings, read_dataset
from data_prep.errors import DeidError, IngestError, one_sentence
from data_prep.pseudonym import PseudonymKey, remap_uid, study_pseudonym
from data_prep.types import IngestLimits

logger = logging.getLogger(__name__)

Action = Literal["D", "Z", "X", "K", "C", "U"]
PROFILE_FILE = "deid_profile.csv"
DEID_METHOD = "DICOM PS3.15 E.1 Basic Profile (medvlm)"
_DUMMY = {
    "PN": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "CS": "ANONYMIZED",
}
_FILLER = "ANONYMIZED"  # the dummy for string VRs without their own entry in _DUMMY (LO, SH, ...)
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_NUMERIC_VRS = frozenset({"DA", "DS", "DT", "IS", "TM"})
_COMPOUND: dict[str, Action] = {"Z/D": "D", "X/D": "D", "X/Z/D": "D", "X/Z": "Z", "X/Z/U*": "U", "X/Z/U": "U"}
_BIRTH_KEYWORDS = frozenset({"PatientBirthDate", "PatientBirthTime"})
_IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientAddress",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "DeviceSerialNumber",
)


@dataclass(frozen=True)
class ProfileRule:
    """One row of the profile table: a tag (or a ``xx`` mask) and its action."""

    group: int
    element: int
    group_mask: int
    element_mask: int
    keyword: str
    action: Action

    def matches(self, tag: int) -> bool:
        """Whether a (group << 16 | element) tag falls under this rule."""
        return ((tag >> 16) & self.group_mask) == self.group and (
            tag & 0xFFFF & self.element_mask
        ) == self.element


@dataclass(frozen=True)
class DeidProfile:
    """The parsed profile table: exact tags and masked rules (e.g. overlay groups ``60xx``)."""

    exact: dict[int, ProfileRule]
    masked: tuple[ProfileRule, ...]

    def action_for(self, tag: int) -> Action | None:
        """The action for a tag, or None when the table does not list it."""
        rule = self.exact.get(tag)
        if rule is not None:
            return rule.action
        for m in self.masked:
            if m.matches(tag):
                return m.action
        return None


def _parse_tag(text: str) -> tuple[int, int, int, int]:
    g, e = text.strip().strip("()").split(",")

    def part(s: str) -> tuple[int, int]:
        s = s.strip().upper()
        value = int(s.replace("X", "0"), 16)
        mask = int("".join("0" if c == "X" else "F" for c in s), 16)
        return value, mask

    (gv, gm), (ev, em) = part(g), part(e)
    return gv, ev, gm, em


@lru_cache(maxsize=1)
def load_profile() -> DeidProfile:
    """Load the Annex E table shipped in this package (cached; the table is immutable).

    Returns:
        The profile.

    Raises:
        DeidError: the table is missing or has an unknown action.
    """
    try:
        text = resources.files("data_prep").joinpath(PROFILE_FILE).read_text(encoding="utf-8")
    except OSError as e:
        raise DeidError(f"the de-identification profile table {PROFILE_FILE} cannot be read") from e
    exact: dict[int, ProfileRule] = {}
    masked: list[ProfileRule] = []
    for row in csv.DictReader(text.splitlines()):
        raw = row["action"].strip().upper()
        action = _COMPOUND.get(raw, raw)
        if action not in ("D", "Z", "X", "K", "C", "U"):
            raise DeidError(f"the profile table has an unknown action {raw} for {row['tag']}")
        grp, elm, gmask, emask = _parse_tag(row["tag"])
        rule = ProfileRule(grp, elm, gmask, emask, row["keyword"], action)  # type: ignore[arg-type]
        if gmask == 0xFFFF and emask == 0xFFFF:
            exact[(grp << 16) | elm] = rule
        else:
            masked.append(rule)
    return DeidProfile(exact, tuple(masked))


@dataclass(frozen=True)
class DeidResult:
    """A de-identified data set and what was done.

    Attributes:
        dataset: the de-identified pydicom Dataset (a copy; the input is not modified).
        study_id: pseudonymous study id (keyed hash of the original StudyInstanceUID), or None.
        warnings: e.g. burned-in annotation that pixel data may still show.
        actions: how many elements each action touched (``D``, ``Z``, ``X``, ``U``, ``private``, ``shift``).
        date_shift_days: the shift applied, or None when dates were removed.
    """

    dataset: Any
    study_id: str | None
    warnings: tuple[str, ...]
    actions: dict[str, int] = field(default_factory=dict)
    date_shift_days: int | None = None


def _as_key(key: PseudonymKey | bytes | str) -> PseudonymKey:
    if isinstance(key, PseudonymKey):
        return key
    return PseudonymKey(key.encode() if isinstance(key, str) else bytes(key), "argument")


def _shift_date(value: str, vr: str, days: int) -> str:
    """Shift a DA (YYYYMMDD) or the date part of a DT by ``days``; unparseable values are emptied."""
    text = value.strip()
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    except ValueError:
        return ""
    return day.strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")


def _registered(uid: str) -> bool:
    from pydicom.uid import UID_dictionary

    return uid in UID_dictionary


class _Deidentifier:
    """Applies the profile to one data set (recursively) and counts what it did."""

    def __init__(self, key: PseudonymKey, date_shift_days: int | None) -> None:
        self.key = key
        self.shift = date_shift_days
        self.profile = load_profile()
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _uid(self, value: Any) -> Any:
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [self._uid(v) for v in value]
        text = str(value).strip().rstrip("\x00")
        if not text or _registered(text):
            return text
        return remap_uid(self.key, text)

    def _dummy(self, elem: Any) -> None:
        if elem.VR == "SQ":
            elem.value = []  # a sequence dummy: no items, so nothing nested can leak
        elif elem.VR == "UI":
            elem.value = self._uid(elem.value)
        elif elem.VR in _DUMMY:
            elem.value = _DUMMY[elem.VR]
        elif elem.VR in _STRING_VRS:
            elem.value = _FILLER
        else:
            elem.value = None

    def apply(self, ds: Any) -> None:
        """De-identify ``ds`` in place, including every nested sequence item."""
        for elem in list(ds):
            tag = int(elem.tag)
            if elem.tag.is_private:
                del ds[elem.tag]
                self._count("private")
                continue
            action = self.profile.action_for(tag)
            vr = elem.VR
            shiftable = (
                vr in ("DA", "DT") and elem.keyword not in _BIRTH_KEYWORDS and action not in ("X", "C")
            )
            if shiftable and self.shift is not None:
                self._shift(elem)  # dates the profile removes outright (X) stay removed
                continue
            if action is None:
                self._default(ds, elem)
                continue
            self._count(action)
            if action in ("X", "C"):
                del ds[elem.tag]
            elif action == "Z":
                elem.value = [] if vr == "SQ" else ("" if vr in _STRING_VRS else None)
            elif action == "D":
                self._dummy(elem)
            elif action == "U":
                if vr == "SQ":
                    for item in elem.value:
                        self.apply(item)
                elif vr == "UI":
                    elem.value = self._uid(elem.value)
                else:
                    del ds[elem.tag]
            elif action == "K" and vr == "SQ":
                for item in elem.value:
                    self.apply(item)

    def _shift(self, elem: Any) -> None:
        assert self.shift is not None
        if elem.VM == 0 or elem.value in (None, ""):
            return
        values = elem.value if elem.VM > 1 else [elem.value]
        shifted = [_shift_date(str(v), elem.VR, self.shift) for v in values]
        elem.value = shifted if elem.VM > 1 else shifted[0]
        self._count("shift")

    def _default(self, ds: Any, elem: Any) -> None:
        """Elements the table does not list: recurse, remap UIDs, empty names, drop dates."""
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value or []:
                self.apply(item)
        elif vr == "UI":
            new = self._uid(elem.value)
            if new != elem.value:
                elem.value = new
                self._count("U")
        elif vr == "PN":
            if elem.value not in (None, ""):
                elem.value = ""
                self._count("Z")
        elif vr in ("DA", "DT") and elem.value not in (None, ""):
            del ds[elem.tag]
            self._count("X")


def _identifying_values(ds: Any, *, include_dates: bool) -> set[str]:
    """Original values that must not survive: names, IDs, dates, institution, non-registered UIDs.

    With dates shifted, date values are left out: every date is shifted or removed by
    construction, and a shifted date may legitimately equal another original date.
    """
    values: set[str] = set()
    for kw in _IDENTIFYING_KEYWORDS:
        if not include_dates and kw.endswith("Date") and kw not in _BIRTH_KEYWORDS:
            continue
        v = ds.get(kw)
        for item in v if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue" else [v]:
            text = str(item or "").strip()
            if len(text) >= 4:
                values.add(text)
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            for item in elem.value if elem.VM > 1 else [elem.value]:
                uid = str(item).strip().rstrip("\x00")
                if uid and not _registered(uid):
                    values.add(uid)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        uid = str(meta.MediaStorageSOPInstanceUID)
        if not _registered(uid):
            values.add(uid)
    return values


# Device make and model are kept by the profile; a site named after its scanner vendor must not
# make every file from that vendor fail the check below.
_DEVICE_KEYWORDS = frozenset({"Manufacturer", "ManufacturerModelName", "SoftwareVersions"})


def _verify(ds: Any, forbidden: set[str]) -> None:
    """Fail closed: raise :class:`DeidError` if anything identifying is left."""
    for elem in ds.iterall():
        if elem.tag.is_private:
            raise DeidError("a private element survived de-identification")
        if elem.VR == "PN" and elem.value not in (None, "", "ANONYMOUS"):
            raise DeidError("a person name survived de-identification")
        if elem.VR in _STRING_VRS and elem.value not in (None, "") and elem.keyword not in _DEVICE_KEYWORDS:
            texts = [str(v) for v in elem.value] if elem.VM > 1 else [str(elem.value)]
            # Numeric, date and time values only hold an identifier if they equal it: a numeric
            # StudyID such as "000000" inside a time "000000.000" is not a leak.
            # The profile's own dummy values are not originals, whatever they happen to equal.
            # The profile's own replacement values (ANONYMIZED for every string VR, the dummies)
            # are not originals, whatever they happen to equal: this keeps a re-run idempotent.
            exact_only = elem.VR in _NUMERIC_VRS
            own = {_DUMMY.get(elem.VR, _FILLER), _FILLER}
            for text in texts:
                if text.strip() in own:
                    continue
                if any(
                    f == text.strip() or (not exact_only and len(f) >= 6 and f in text) for f in forbidden
                ):
                    raise DeidError(
                        f"an original identifying value survived in {elem.keyword or 'an element'}"
                    )


def deidentify_dataset(
    ds: Any, *, key: PseudonymKey | bytes | str, date_shift_days: int | None = None
) -> DeidResult:
    """De-identify a pydicom Dataset with the Annex E basic profile (see the module docstring).

    Args:
        ds: the Dataset (not modified; a deep copy is de-identified).
        key: pseudonymisation key (a :class:`PseudonymKey`, or at least 16 bytes/characters).
        date_shift_days: shift dates by this many days instead of removing them.

    Returns:
        The result, with the de-identified copy in ``dataset``.

    Raises:
        DeidError: the data set cannot be de-identified safely (nothing should be written).
    """
    pkey = _as_key(key)
    warnings_out: list[str] = []
    try:
        if date_shift_days == 0:
            raise DeidError("a date shift of 0 days would keep the original dates")
        forbidden = _identifying_values(ds, include_dates=date_shift_days is None)
        out = copy.deepcopy(ds)
        study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        modality = str(ds.get("Modality", "") or "").upper()
        if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
            warnings_out.append("BurnedInAnnotation is YES: the pixels may still show identifying text")
        elif modality in BURNED_IN_PRONE_MODALITIES:
            warnings_out.append(
                f"{modality} images often carry burned-in text that this profile does not remove"
            )
        worker = _Deidentifier(pkey, date_shift_days)
        worker.apply(out)
        out.file_meta, meta_note = _fresh_file_meta(out, getattr(ds, "file_meta", None))
        if meta_note:
            warnings_out.append(meta_note)
        _mark(out, date_shift_days)
        out.preamble = b"\x00" * 128
        _verify(out, forbidden)
    except DeidError:
        raise
    except Exception as e:
        raise DeidError(f"de-identification failed ({type(e).__name__}); nothing was written") from e
    return DeidResult(
        dataset=out,
        study_id=study_pseudonym(pkey, study_uid) if study_uid else None,
        warnings=tuple(warnings_out),
        actions=dict(worker.counts),
        date_shift_days=date_shift_days,
    )


def _fresh_file_meta(ds: Any, original: Any) -> tuple[Any, str | None]:
    """New file meta information: class/instance UIDs of the de-identified data set, the original
    transfer syntax, and this implementation's identity (the source AE title etc. are dropped).

    A data set without a transfer syntax (e.g. built in memory) is written as Explicit VR Little
    Endian when its pixel data is native, with a note; compressed pixel data is refused.

    Returns:
        ``(file meta, note or None)``.

    Raises:
        DeidError: compressed pixel data and no transfer syntax to say how it is encoded.
    """
    from pydicom import __version__ as pydicom_version
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    note = None
    tsyntax = getattr(original, "TransferSyntaxUID", None) if original is not None else None
    if not tsyntax:
        if "PixelData" in ds and ds["PixelData"].is_undefined_length:
            raise DeidError(
                "the file has compressed pixel data but no transfer syntax UID, so it cannot be re-encoded"
            )
        tsyntax = ExplicitVRLittleEndian
        note = "the input had no transfer syntax UID; written as Explicit VR Little Endian"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or getattr(original, "MediaStorageSOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = tsyntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom_version}"[:16]
    return meta, note


def _mark(ds: Any, date_shift_days: int | None) -> None:
    from pydicom.dataset import Dataset

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEID_METHOD
    codes = []
    for value, meaning in (("113100", "Basic Application Confidentiality Profile"),) + (
        (("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),)
        if date_shift_days is not None
        else ()
    ):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if date_shift_days is not None else "REMOVED"


@dataclass(frozen=True)
class DeidReport:
    """One line of ``medvlm deid``: an input file and where its de-identified copy went."""

    source: str
    status: Literal["ok", "error"]
    output: str | None = None
    study_id: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        """The JSON object printed by ``medvlm deid --json``."""
        out: dict[str, object] = {
            "source": self.source,
            "status": self.status,
            "output": self.output,
            "study_id": self.study_id,
            "warnings": list(self.warnings),
        }
        if self.status == "error":
            out["error"] = self.error
        return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _inputs(
    path: Path, limits: IngestLimits, out: Path
) -> Iterator[tuple[str, str, Path | bytes | None, IngestError | None]]:
    """``(source, label, file or bytes, error)`` per input file.

    A file inside the folder or zip is ``<path>#file-N`` and is called by its position, suffix and
    size in messages (:func:`data_prep.archive.member_label`), never by its name, which can be PHI.
    """
    from data_prep.archive import folder_files, is_skipped_name, iter_zip, member_label

    if path.is_dir():
        skip_out = _inside(out, path)  # OUT inside IN: never read back what this or an earlier run wrote
        files = [
            p
            for p in folder_files(path)
            if not (skip_out and _inside(p, out)) and not is_skipped_name(p.name)
        ]
        for n, p in enumerate(files, start=1):
            if p.is_symlink():
                label = member_label(n, "folder", p.suffix, None)
                yield (
                    f"{path}#file-{n}",
                    label,
                    None,
                    IngestError(f"{label} is a symbolic link and was skipped"),
                )
            elif p.is_file():
                yield f"{path}#file-{n}", member_label(n, "folder", p.suffix, p.stat().st_size), p, None
    elif path.is_file() and path.suffix.lower() == ".zip":
        for m in iter_zip(path, limits=limits):
            yield f"{path}#file-{m.position}", m.label, m.data, m.error
    elif path.is_file():
        yield str(path), path.name, path, None
    else:
        yield str(path), path.name, None, IngestError(f"{path.name} does not exist")


def deidentify_path(
    path: Path,
    out: Path,
    *,
    key: PseudonymKey,
    date_shift_days: int | None = None,
    limits: IngestLimits | None = None,
) -> Iterator[DeidReport]:
    """De-identify a file, folder or zip of DICOM into ``out``, one report per input file.

    Output files are named ``<study pseudonym>/<new SOPInstanceUID>.dcm``; original file names
    are not reused (they can hold names). A file that fails is reported and not written. When
    ``out`` lies inside a folder ``path``, files under ``out`` are not read. Re-running on earlier
    output is safe: the profile's own replacement values do not count as surviving identifiers.

    Args:
        path: a DICOM file, a folder, or a .zip archive.
        out: output folder (created).
        key: pseudonymisation key.
        date_shift_days: shift dates instead of removing them.
        limits: size caps.

    Yields:
        :class:`DeidReport` per input file.
    """
    limits = limits or IngestLimits()
    try:
        for source, label, src, err in _inputs(path, limits, out):
            if err is not None or src is None:
                yield DeidReport(source, "error", error=one_sentence(err or IngestError("unreadable input")))
                continue
            try:
                notes: list[str] = []
                with captured_warnings(notes):
                    ds = read_dataset(src, name=label, limits=limits)
                    result = deidentify_dataset(ds, key=key, date_shift_days=date_shift_days)
                target = _write(result, out)
            except IngestError as e:
                yield DeidReport(source, "error", error=one_sentence(e))
                continue
            yield DeidReport(
                source, "ok", output=str(target), study_id=result.study_id, warnings=result.warnings
            )
    except IngestError as e:
        yield DeidReport(str(path), "error", error=one_sentence(e))


def _write(result: DeidResult, out: Path) -> Path:
    ds = result.dataset
    folder = out / (result.study_id or "no-study")
    sop = str(ds.get("SOPInstanceUID", "") or "")
    if not sop:
        raise DeidError("the data set has no SOPInstanceUID, so it cannot be written safely")
    target = folder / f"{sop}.dcm"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        ds.save_as(tmp, enforce_file_format=True)
        tmp.replace(target)
    except Exception as e:
        raise DeidError(f"writing the de-identified file failed ({type(e).__name__})") from e
    return target
