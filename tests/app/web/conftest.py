"""Fixtures for the web app tests: a temp SQLite store, a scripted backend, real DICOM files, a service.

The backend answers like a grounded model: "No" with the image, "Yes" with blank images, with yes/no
probabilities, and cites the first fact it was given. No model is loaded: these tests check the app,
not the model (tests/medvlm and tests/app/test_ask.py do that on tiny checkpoints).
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from app.store import AuditKey, Store, init_db, make_engine
from app.web.service import WebService
from data_prep.pseudonym import PseudonymKey
from medvlm import BackendError, Generation, GenerationSettings, KnowledgeFact, ModelInfo
from medvlm.assistant import Assistant
from medvlm.processing import ChatPrompt

CHEST_NAME = "RG1_UNCR.dcm"  # a real PA chest radiograph (CR, CHEST) from pydicom-data
FACTS = [
    KnowledgeFact("RID34539", "A pleural effusion is fluid in the pleural space.", "RadLex@4.1"),
    KnowledgeFact("RID5352", "Pneumothorax is air in the pleural space.", "RadLex@4.1"),
]
NOTICE = "Built-in model: trained on synthetic data only. Research software, not for clinical use."


@dataclass
class ScriptedBackend:
    """Answers "No" when the prompt has a non-blank image and "Yes" for the blank-image probe."""

    multi_image: bool = True
    fail: bool = False
    prompts: list[ChatPrompt] = field(default_factory=list)

    def info(self) -> ModelInfo:
        return ModelInfo("fake-vlm@0123456789ab", "fake-adapter@ba9876543210", "fake", self.multi_image)

    def generate(
        self, prompts: list[ChatPrompt], settings: GenerationSettings, yes_no: bool = False
    ) -> list[Generation]:
        if self.fail:
            raise BackendError("the model server returned HTTP 500")
        self.prompts.extend(prompts)
        out = []
        for prompt in prompts:
            if any(np.asarray(im).any() for im in prompt.images):
                out.append(Generation("No pleural effusion is seen [RID34539].", 0.05, 0.9))
            else:
                out.append(Generation("Yes.", 0.8, 0.1))
        return out

    def stream(self, prompt: ChatPrompt, settings: GenerationSettings) -> Iterator[str]:
        yield "No."


@pytest.fixture
def site_key() -> PseudonymKey:
    return PseudonymKey(b"web-app-test-site-key-0123456789", "test")


@pytest.fixture
def store(tmp_path: Path, site_key: PseudonymKey) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'medvlm.db'}")
    key = AuditKey.derive(site_key)
    init_db(engine, key)
    yield Store.open(engine, key)
    engine.dispose()


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def service(store: Store, backend: ScriptedBackend, site_key: PseudonymKey, tmp_path: Path) -> WebService:
    return WebService(
        store=store,
        assistant=Assistant(backend),
        key=site_key,
        cases_dir=tmp_path / "home" / "cases",
        notice=NOTICE,
        facts=lambda question: list(FACTS),
    )


@pytest.fixture
def chest(tmp_path: Path) -> Path:
    """A copy of the real chest radiograph under a file name that looks like PHI."""
    source = get_testdata_file(CHEST_NAME)
    if source is None:
        pytest.skip(f"{CHEST_NAME} (pydicom-data) is not installed")
    target = tmp_path / "uploads" / "SMITH^JANE_MRN12345678.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(str(source), target)
    return target


@pytest.fixture
def ct_zip(tmp_path: Path) -> Path:
    """A zip of a small CT series (6 slices) plus members refused as unsafe (traversal, absolute path)."""
    from pydicom.uid import generate_uid

    from tests.data_prep._synth import ct_slice, write

    archive = tmp_path / "uploads" / "DOE^JOHN_study.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(6):
            slice_path = tmp_path / f"slice{i}.dcm"
            write(ct_slice(i * 100, z=i * 2.5, instance=i + 1, series_uid=series), str(slice_path))
            zf.write(slice_path, f"study/SMITH^JANE/{i}.dcm")
        zf.writestr("../DOE_JOHN.dcm", slice_path.read_bytes())
        zf.writestr("/etc/evil.dcm", slice_path.read_bytes())
    return archive
