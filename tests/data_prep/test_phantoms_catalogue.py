"""The findings catalogue: exact ids shared with the knowledge graph, validation."""

from __future__ import annotations

import pytest

from data_prep.phantoms.catalogue import CatalogueError, load_catalogue, parse_catalogue

CXR_IDS = {
    "normal",
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "lung_nodule",
    "lung_mass",
    "consolidation",
    "atelectasis",
    "pulmonary_edema",
    "endotracheal_tube",
    "central_venous_catheter",
}
CT_IDS = {"normal", "lung_nodule", "pleural_effusion", "intracranial_hemorrhage", "cerebral_infarct"}
SLIDE_IDS = {"normal", "normal_tissue", "tumor", "necrosis", "inflammation", "mitosis"}


def test_ids_per_kind_match_the_agreed_list() -> None:
    cat = load_catalogue()
    assert {f.id for f in cat.for_kind("cxr")} == CXR_IDS
    assert {f.id for f in cat.for_kind("ct")} == CT_IDS
    assert {f.id for f in cat.for_kind("slide")} == SLIDE_IDS
    assert set(cat.findings["pleural_effusion"].attributes["laterality"].values) == {
        "left",
        "right",
        "bilateral",
    }
    assert cat.findings["lung_nodule"].attributes["size_mm"].int_range == (8, 30)


def test_validate_accepts_good_and_rejects_bad_labels() -> None:
    cat = load_catalogue()
    cat.validate("pneumothorax", {"laterality": "left"}, "cxr")
    with pytest.raises(CatalogueError, match="not allowed"):
        cat.validate("pneumothorax", {"laterality": "bilateral"}, "cxr")
    with pytest.raises(CatalogueError, match="attributes"):
        cat.validate("pneumothorax", {}, "cxr")
    with pytest.raises(CatalogueError, match="does not appear"):
        cat.validate("tumor", {}, "cxr")
    with pytest.raises(CatalogueError, match="unknown finding"):
        cat.validate("broken_bone", {}, "cxr")
    with pytest.raises(CatalogueError, match="not allowed"):
        cat.validate("lung_nodule", {"laterality": "left", "zone": "upper", "size_mm": 45}, "cxr")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"findings": [{"id": "a", "name": "a", "kinds": ["mri"], "description": "x"}]}, "kinds"),
        ({"findings": [{"id": "Bad Id", "name": "a", "kinds": ["cxr"], "description": "x"}]}, "lower_snake"),
        ({"findings": [{"id": "a", "name": "a", "kinds": ["cxr"], "description": "x"}] * 2}, "duplicate"),
        (
            {
                "findings": [
                    {"id": "a", "name": "a", "kinds": ["cxr"], "description": "x", "attributes": {"s": 3}}
                ]
            },
            "attribute",
        ),
        ({"items": []}, "findings"),
        ({"findings": [{"id": "a"}]}, "entry"),
    ],
)
def test_malformed_catalogues_are_rejected(data: object, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(data)
