"""Entity linking: aliases, abbreviations, misspellings, ConText negation and uncertainty."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knowledge_graph.graph import KnowledgeGraph
from knowledge_graph.linking import Entity, EntityLinker, Specialisation, damerau_levenshtein
from knowledge_graph.retriever import linker_from_graph, specialisations_from_graph
from knowledge_graph.text import stem


@pytest.fixture(scope="module")
def linker(graph: KnowledgeGraph) -> EntityLinker:
    return linker_from_graph(graph)


def _flags(linker: EntityLinker, text: str) -> dict[str, tuple[bool, bool]]:
    return {e.node: (e.negated, e.uncertain) for e in linker.link(text)}


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("Large right PTX.", "pneumothorax"),
        ("known CHF", "congestive_heart_failure"),
        ("Pleural-Effusions bilaterally", "pleural_effusion"),
        ("haemorrhage in the brain: intracranial haemorrhage", "intracranial_hemorrhage"),
        ("pulmonary oedema", "pulmonary_edema"),
        ("GGOs in both lungs", "ground_glass_opacity"),
    ],
)
def test_aliases_abbreviations_and_spelling_variants(linker: EntityLinker, text: str, node: str) -> None:
    assert node in _flags(linker, text)


@pytest.mark.parametrize(
    ("text", "node"),
    [("pnuemothorax", "pneumothorax"), ("cardiomegally", "cardiomegaly"), ("atelectesis", "atelectasis")],
)
def test_misspellings_are_corrected_and_flagged(linker: EntityLinker, text: str, node: str) -> None:
    ents = linker.link(text)
    assert [(e.node, e.fuzzy) for e in ents] == [(node, True)]


def test_common_words_are_not_corrected_into_findings(linker: EntityLinker) -> None:
    assert linker.link("Please tell me about this study and what you think.") == []


def test_short_abbreviations_need_capitals(linker: EntityLinker) -> None:
    assert "pulmonary_embolism" not in _flags(linker, "tell us about the pe teacher")
    assert "pulmonary_embolism" in _flags(linker, "CTPA shows PE")


@pytest.mark.parametrize(
    ("text", "node", "negated", "uncertain"),
    [
        ("No pleural effusion.", "pleural_effusion", True, False),
        ("There is no evidence of pneumothorax.", "pneumothorax", True, False),
        ("Pneumothorax has resolved.", "pneumothorax", True, False),
        ("no focal consolidation", "consolidation", True, False),
        ("Possible pneumonia.", "pneumonia", False, True),
        ("Atelectasis versus consolidation.", "atelectasis", False, True),
        ("Infection cannot be excluded; consolidation cannot be excluded.", "consolidation", False, True),
        ("cavity, ?TB", "tuberculosis", False, True),
        ("Is there a pleural effusion?", "pleural_effusion", False, False),
        ("Stable small effusion.", "pleural_effusion", False, False),
        ("No change in the effusion.", "pleural_effusion", False, False),
    ],
)
def test_context(linker: EntityLinker, text: str, node: str, negated: bool, uncertain: bool) -> None:
    assert _flags(linker, text)[node] == (negated, uncertain)


def test_negation_scope_stops_at_terminator_and_sentence(linker: EntityLinker) -> None:
    flags = _flags(linker, "No pneumothorax but there is a large effusion. Consolidation at the left base.")
    assert flags["pneumothorax"] == (True, False)
    assert flags["pleural_effusion"] == (False, False)
    assert flags["consolidation"] == (False, False)


def test_negation_spans_a_list(linker: EntityLinker) -> None:
    flags = _flags(linker, "No effusion, pneumothorax or consolidation.")
    assert all(flags[n][0] for n in ("pleural_effusion", "pneumothorax", "consolidation"))


def test_anatomy_plus_attribute_composes_a_finding(linker: EntityLinker) -> None:
    assert _flags(linker, "The heart is enlarged.")["cardiomegaly"] == (False, False)
    assert _flags(linker, "The heart is not enlarged.")["cardiomegaly"][0] is True


def test_entity_offsets_point_at_the_mention(linker: EntityLinker) -> None:
    text = "Findings: small right pleural effusion."
    (ent,) = [e for e in linker.link(text) if e.node == "pleural_effusion"]
    assert text[ent.start : ent.end] == ent.text == "pleural effusion"


@given(st.text(alphabet="abcde", max_size=8), st.text(alphabet="abcde", max_size=8))
def test_edit_distance_is_a_symmetric_bounded_metric(a: str, b: str) -> None:
    d = damerau_levenshtein(a, b)
    assert d == damerau_levenshtein(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)


def test_edit_distance_counts_a_transposition_once() -> None:
    assert damerau_levenshtein("infraction", "infarction") == 1
    assert damerau_levenshtein("edma", "edema") == 1


def test_offsets_survive_characters_whose_lower_case_is_longer(linker: EntityLinker) -> None:
    text = "İİ pleural effusion"
    (ent,) = linker.link(text)
    assert (ent.text, ent.node) == ("pleural effusion", "pleural_effusion")


@settings(deadline=None)
@given(st.text(max_size=200))
def test_linking_any_text_never_fails_and_offsets_hold(text: str) -> None:
    linker = _shared_linker()
    for e in linker.link(text):
        assert 0 <= e.start < e.end <= len(text)
        assert text[e.start : e.end] == e.text


_SOUP = ["no", "pleural", "effusion", "?", "but", "possible", "PTX", ".", ","]


@settings(deadline=None)
@given(st.lists(st.sampled_from(_SOUP), max_size=12))
def test_linking_clinical_token_soup(words: list[str]) -> None:
    text = " ".join(words)
    for e in _shared_linker().link(text):
        assert text[e.start : e.end] == e.text


def _shared_linker() -> EntityLinker:
    # built once per process; hypothesis does not allow function-scoped fixtures
    global _LINKER
    if _LINKER is None:
        from knowledge_graph.graph import load_graph

        g = load_graph()
        _LINKER = linker_from_graph(g)
    return _LINKER


_LINKER: EntityLinker | None = None


def test_size_words_do_not_compose_findings(linker: EntityLinker) -> None:
    nodes = {e.node for e in linker.link("chronic small vessel ischemic changes")}
    assert "phlebolith" not in nodes


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("CTPA: bilateral segmental PEs", "pulmonary_embolism"),
        ("ETTs in both patients", "endotracheal_tube"),
        ("NGT's tip in the stomach", "enteric_tube"),
    ],
)
def test_plural_and_possessive_abbreviations_link_like_the_singular(
    linker: EntityLinker, text: str, node: str
) -> None:
    assert node in _flags(linker, text)


def test_plural_abbreviation_still_needs_capitals(linker: EntityLinker) -> None:
    assert "pulmonary_embolism" not in _flags(linker, "the pes of the patient")


class _FakeSpans:
    """Records the phrases it is asked about and answers every one with the same node."""

    def __init__(self, node: str = "subarachnoid_hemorrhage", sim: float = 0.9) -> None:
        self.node, self.sim = node, sim
        self.phrases: list[str] = []

    def __call__(self, phrases: list[str]) -> list[tuple[str, float] | None]:
        self.phrases += phrases
        return [(self.node, self.sim) for _ in phrases]


def _dense(entities: list[Entity]) -> list[tuple[str, str, bool, bool]]:
    return [(e.text, e.node, e.negated, e.uncertain) for e in entities if e.source == "dense"]


@pytest.mark.parametrize(
    ("text", "phrase", "mention", "negated", "uncertain"),
    [
        ("There is no subarachnoid blood.", "subarachnoid blood", "subarachnoid blood", True, False),
        ("Subarachnoid blood is not seen.", "subarachnoid blood", "Subarachnoid blood", True, False),
        ("possible subarachnoid blood", "subarachnoid blood", "subarachnoid blood", False, True),
        ("Findings: ?subarachnoid blood", "subarachnoid blood", "subarachnoid blood", False, True),
        ("The pancreas is not swollen.", "swollen pancreas", "pancreas is not swollen", True, False),
    ],
)
def test_unresolved_span_in_scope_is_dense_linked_with_its_status(
    linker: EntityLinker, text: str, phrase: str, mention: str, negated: bool, uncertain: bool
) -> None:
    spans = _FakeSpans()
    ents = linker.link(text, spans)
    assert spans.phrases == [phrase]
    assert _dense(ents) == [(mention, "subarachnoid_hemorrhage", negated, uncertain)]
    e = next(e for e in ents if e.source == "dense")
    assert e.fuzzy and e.similarity == 0.9
    assert text[e.start : e.end] == e.text


def test_dense_span_below_threshold_is_not_linked(linker: EntityLinker) -> None:
    spans = _FakeSpans(sim=linker.span_threshold - 0.01)
    assert _dense(linker.link("There is no subarachnoid blood.", spans)) == []
    assert spans.phrases == ["subarachnoid blood"]


def test_without_span_linker_nothing_is_dense_linked(linker: EntityLinker) -> None:
    assert linker.link("There is no subarachnoid blood.") == []


def test_only_unresolved_spans_in_scope_are_embedded(linker: EntityLinker) -> None:
    spans = _FakeSpans()
    linker.link("No pleural effusion or subarachnoid blood. Small pneumothorax and some blood.", spans)
    assert spans.phrases == ["subarachnoid blood"]  # "pleural effusion" is resolved; sentence 2 asserts


def test_negation_does_not_leak_onto_present_findings(linker: EntityLinker) -> None:
    spans = _FakeSpans()
    text = "No effusion; small pneumothorax. No effusion, but subarachnoid blood is present."
    ents = linker.link(text, spans)
    assert spans.phrases == []
    assert _flags(linker, "No effusion; small pneumothorax")["pneumothorax"] == (False, False)
    assert not any(e.negated for e in ents if e.node in ("pneumothorax", "subarachnoid_hemorrhage"))


def test_dense_link_does_not_repeat_a_node_linked_in_the_sentence(linker: EntityLinker) -> None:
    spans = _FakeSpans(node="pleural_effusion")
    ents = linker.link("No pleural effusion or fluid collection.", spans)
    assert spans.phrases == ["fluid collection"]
    assert _dense(ents) == []


def test_subject_already_resolved_is_not_composed(linker: EntityLinker) -> None:
    spans = _FakeSpans()
    linker.link("The pleural effusion is not large.", spans)
    assert spans.phrases == []


# ---- anatomy-aware specialisation (located_in edges) ----


@pytest.mark.parametrize(
    ("text", "node", "negated", "generic"),
    [
        ("Spleen and adrenals: no nodules.", "adrenal_nodule", True, "lung_nodule"),
        ("The kidneys show several stones.", "nephrolithiasis", False, None),
        ("Liver: no focal lesion.", "liver_lesion", True, None),
        ("Thyroid: a 2 cm nodule.", "thyroid_nodule", False, "lung_nodule"),
        ("No skeletal metastatic deposits.", "bone_metastasis", True, "metastatic_carcinoma"),
        ("The brain: no aneurysm.", "cerebral_aneurysm", True, None),
    ],
)
def test_generic_word_beside_an_anatomy_links_that_anatomys_node(
    linker: EntityLinker, text: str, node: str, negated: bool, generic: str | None
) -> None:
    flags = _flags(linker, text)
    assert flags[node][0] is negated
    assert generic is None or generic not in flags


def test_the_clause_decides_between_specialisations(linker: EntityLinker) -> None:
    assert "aortic_aneurysm" in _flags(linker, "Thoracic aorta: no aneurysm.")
    flags = _flags(linker, "Abdominal aorta: no aneurysm.")
    assert flags["abdominal_aortic_aneurysm"] == (True, False) and "aortic_aneurysm" not in flags


def test_a_node_already_of_that_anatomy_is_kept(linker: EntityLinker) -> None:
    flags = _flags(linker, "Ground glass opacities in both lungs.")
    assert "ground_glass_opacity" in flags and "lung_opacity" not in flags
    flags = _flags(linker, "Right lung: nodule.")
    assert flags == {"right_lung": (False, False), "lung_nodule": (False, False)}


def test_specialisation_scope_is_the_sentence_or_the_clause_after_a_header(linker: EntityLinker) -> None:
    # the header carries to the clause after it ...
    assert "thyroid_nodule" in _flags(linker, "Thyroid:\nno nodule.")
    # ... but a finished sentence about an anatomy does not
    flags = _flags(linker, "The thyroid is normal. No nodule.")
    assert "thyroid_nodule" not in flags and flags["lung_nodule"] == (True, False)
    # and a header is only anatomy words ("Findings:" is not one)
    assert "thyroid_nodule" not in _flags(linker, "Thyroid: normal. Findings: nodule.")


def test_predicate_words_of_an_anatomy_resolve_without_the_encoder(linker: EntityLinker) -> None:
    # words of a finding's alias beside its anatomy ("widened mediastinum", "dilated ventricles")
    assert _flags(linker, "The mediastinum is not widened.")["enlarged_cardiomediastinum"] == (True, False)
    assert _flags(linker, "The ventricles are not dilated.")["hydrocephalus"] == (True, False)


def test_a_header_anatomy_composes_with_an_attribute(linker: EntityLinker) -> None:
    assert _flags(linker, "Heart: not enlarged.")["cardiomegaly"] == (True, False)


def test_vague_words_are_not_specialised(linker: EntityLinker) -> None:
    assert set(_flags(linker, "Lungs: chronic changes. Lung disease.")) == {"lung"}


def test_ambiguous_specialisation_links_nothing(graph: KnowledgeGraph) -> None:
    nodes = ["pneumothorax", "atelectasis", "lobar_collapse"]
    table = {"lung": tuple(Specialisation((stem("zzfoo"),), n, frozenset({stem("zzfoo")})) for n in nodes)}
    ambiguous = EntityLinker(graph.nodes(), specialisations=table)
    assert {e.node for e in ambiguous.link("Lungs: zzfoo.")} == {"lung"}
    two = EntityLinker(graph.nodes(), specialisations={"lung": table["lung"][:2]})
    assert {e.node for e in two.link("Lungs: zzfoo.")} == {"lung", *nodes[:2]}


def test_specialisation_table_follows_the_graph(graph: KnowledgeGraph) -> None:
    table = specialisations_from_graph(graph)
    assert any(sp.node == "bone_metastasis" for sp in table["bone"])
    assert any(sp.node == "adrenal_nodule" and sp.rest == (stem("nodule"),) for sp in table["adrenal_gland"])
    # kinds inherit (right lung is_a lung), contents do not (abdomen → adrenal gland)
    assert any(sp.node == "lung_nodule" for sp in table["right_lung"])
    assert not any(sp.node == "abdominal_aortic_aneurysm" for sp in table["adrenal_gland"])


# ---- status lands on findings ----


def test_negated_attribute_moves_its_status_to_the_finding_of_the_same_word(linker: EntityLinker) -> None:
    flags = _flags(linker, "Cavitation is not seen.")
    assert flags["cavity"] == (True, False)
    assert "lung_nodule" not in _flags(linker, "nodular contour of the liver")  # asserted: left alone


def test_head_noun_of_a_place_qualified_alias_is_linked_with_its_status(graph: KnowledgeGraph) -> None:
    from knowledge_graph.schema import Node, NodeType, Provenance

    grouping = Node(
        id="zz_grouping",
        type=NodeType.FINDING,
        name="zz grouping",
        definition="test",
        synonyms=("apical pleural effusion", "loculated pleural effusion"),
        provenance=Provenance(source="test", version="1"),
    )
    linker = EntityLinker([*graph.nodes(), grouping])
    flags = {e.node: (e.negated, e.uncertain) for e in linker.link("No apical pleural effusion.")}
    assert flags == {"zz_grouping": (True, False), "pleural_effusion": (True, False)}
    # a qualifier that is not a place names something else: its absence says nothing of the head
    flags = {e.node: (e.negated, e.uncertain) for e in linker.link("No loculated pleural effusion.")}
    assert flags == {"zz_grouping": (True, False)}


def test_aetiology_qualified_aliases_do_not_negate_the_head(linker: EntityLinker) -> None:
    assert "pleural_effusion" not in _flags(linker, "No infected pleural effusion.")
    assert "pulmonary_embolism" not in _flags(linker, "No septic pulmonary embolism.")
    assert set(_flags(linker, "Malignant pleural effusion.")) == {"malignant_pleural_effusion"}
    assert "rib_fracture_acute" not in _flags(linker, "non-acute rib fracture")


# ---- list scope after an alias that starts with a trigger ----


def test_alias_led_by_a_trigger_keeps_the_list_negated(linker: EntityLinker) -> None:
    flags = _flags(linker, "No mass effect, hydrocephalus or herniation.")
    assert flags["hydrocephalus"] == (True, False)
    assert flags["effect_none"] == (False, False)  # "no mass effect" is itself the absence
    assert _flags(linker, "No mass effect. Hydrocephalus.")["hydrocephalus"] == (False, False)


# --- Update 4: post-term and synoptic status, comma-limited backward scope, group children, gas/air


@pytest.mark.parametrize(
    ("text", "node", "flags"),
    [
        ("Lymphovascular invasion: absent", "lymphovascular_invasion", (True, False)),
        ("Perineural invasion: Not identified.", "perineural_invasion", (True, False)),
        ("Necrosis: none.", "necrosis", (True, False)),
        ("Pneumothorax: No", "pneumothorax", (True, False)),
        ("Consolidation: suspected.", "consolidation", (False, True)),
        ("Pleural effusion: cannot be excluded.", "pleural_effusion", (False, True)),
        ("Perineural invasion: present.", "perineural_invasion", (False, False)),
    ],
)
def test_a_synoptic_field_value_sets_the_status_of_its_label(
    linker: EntityLinker, text: str, node: str, flags: tuple[bool, bool]
) -> None:
    assert _flags(linker, text)[node] == flags


def test_an_anatomy_header_with_content_still_carries_over(linker: EntityLinker) -> None:
    # "Kidneys:" stays a header: its value names a finding, so it is not a status-only field
    flags = _flags(linker, "Kidneys: no stones.")
    assert flags["nephrolithiasis"] == (True, False)
    assert flags["kidney"] == (False, False)


@pytest.mark.parametrize(
    ("text", "node", "flags"),
    [
        ("Pneumothorax absent.", "pneumothorax", (True, False)),
        ("Lobar consolidation, pneumonia likely.", "pneumonia", (False, True)),
        ("Pulmonary embolism could not be ruled out.", "pulmonary_embolism", (False, True)),
        ("The pneumothorax has been excluded.", "pneumothorax", (True, False)),
    ],
)
def test_post_term_triggers(linker: EntityLinker, text: str, node: str, flags: tuple[bool, bool]) -> None:
    assert _flags(linker, text)[node] == flags


def test_clause_final_triggers_do_not_reach_back_from_mid_clause(linker: EntityLinker) -> None:
    # "likely" and "absent" before more words are forward-only: the subject stays asserted
    flags = _flags(linker, "Consolidation likely represents pneumonia.")
    assert flags["consolidation"] == (False, False)
    assert flags["pneumonia"] == (False, True)
    assert _flags(linker, "Pleural effusion with absent breath sounds.")["pleural_effusion"] == (False, False)


def test_backward_scope_stops_at_a_comma_unless_the_clause_ends_a_list(linker: EntityLinker) -> None:
    flags = _flags(linker, "Small pleural effusion, pneumothorax not seen.")
    assert flags["pleural_effusion"] == (False, False)
    assert flags["pneumothorax"] == (True, False)
    listed = _flags(linker, "Pleural effusion, pneumothorax and consolidation are not seen.")
    assert all(listed[n] == (True, False) for n in ("pleural_effusion", "pneumothorax", "consolidation"))
    # negation does not leak across a semicolon either
    split = _flags(linker, "No effusion; small pneumothorax.")
    assert split["pleural_effusion"] == (True, False) and split["pneumothorax"] == (False, False)


def test_a_word_naming_only_a_group_links_its_single_specific_finding(linker: EntityLinker) -> None:
    flags = _flags(linker, "There is no herniation.")
    assert flags.get("brain_herniation") == (True, False)
    # "hernia" fits several specific hernias: only the group is linked
    hernia = _flags(linker, "No hernia.")
    assert not {"hiatus_hernia", "diaphragmatic_hernia", "brain_herniation"} & set(hernia)


def test_gas_and_air_are_interchangeable_in_aliases(linker: EntityLinker) -> None:
    assert _flags(linker, "No free gas.")["pneumoperitoneum"] == (True, False)
    assert _flags(linker, "Free subdiaphragmatic gas.")["pneumoperitoneum"] == (False, False)
