"""Typed objects that cross the model layer's boundary: requests, answers, safety decisions.

``medvlm`` imports none of the project's other packages, so these types are its own; the app
converts ``data_prep.ImageView`` and knowledge-graph facts into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from medvlm.errors import RequestError

ImageInput = Image.Image | np.ndarray
SafetyKind = Literal[
    "modality_mismatch", "body_part_mismatch", "harmful_request", "prompt_injection", "out_of_scope"
]
SafetyAction = Literal["refuse", "warn"]


@dataclass(frozen=True)
class ImageContext:
    """What is known about one view from its metadata (never patient identifiers).

    Attributes:
        modality: DICOM modality code or plain word (``CR``, ``MR``, ``CT``, ``SM``, ...), None if unknown.
        body_part: DICOM BodyPartExamined or plain word (``CHEST``, ``HEAD``), None if unknown.
        description: a short description of the view shown to the model (``PA chest radiograph``).
        embedded_text: text found in or attached to the image (burned-in annotations), treated as data.
        dimensions: 2 for a single image or frame, 3 for a view made from a volume (slices, MIP).
    """

    modality: str | None = None
    body_part: str | None = None
    description: str = ""
    embedded_text: str = ""
    dimensions: int = 2


@dataclass(frozen=True)
class ModelScope:
    """What a model was trained on; the safety gate checks every view against it.

    Attributes:
        modalities: DICOM modality codes the model covers (``{"CR", "DX"}``), upper case.
        body_parts: body regions it covers, as DICOM BodyPartExamined codes (``{"CHEST"}``).
        dimensions: image dimensionalities it covers (``{2}``: single images, no volumes).
        action: ``refuse`` or ``warn`` for a view outside the scope. A view whose modality or
            body part is unknown (a plain PNG) is always only warned about.
        name: how the model is named in the reason shown to the clinician.

    Raises:
        RequestError: on construction, for an empty modality or body-part set or a dimension
            other than 2 or 3.
    """

    modalities: frozenset[str]
    body_parts: frozenset[str]
    dimensions: frozenset[int] = frozenset({2})
    action: SafetyAction = "refuse"
    name: str = "this model"

    def __post_init__(self) -> None:
        if not self.modalities or not self.body_parts:
            raise RequestError("a model scope needs at least one modality and one body part")
        if not self.dimensions or not self.dimensions <= {2, 3}:
            raise RequestError("a model scope's dimensions must be 2, 3 or both")


@dataclass(frozen=True)
class KnowledgeFact:
    """A cited fact retrieved from the knowledge graph.

    Attributes:
        fact_id: stable identifier the answer can cite (e.g. a graph node id).
        text: the fact, one or two sentences.
        source: where it comes from (ontology name, report corpus, ...).
    """

    fact_id: str
    text: str
    source: str


@dataclass(frozen=True)
class Turn:
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    text: str


@dataclass
class AskRequest:
    """One question about one or more images.

    Attributes:
        images: PIL images, or uint8 arrays of shape (H, W) or (H, W, 3).
        question: the clinician's question.
        contexts: one ``ImageContext`` per image (or empty: nothing known).
        history: earlier turns, oldest first.
        facts: knowledge facts the model may cite by id.
        report_text: report or note text given as context (untrusted: checked for injections).
        warnings: what the reader of the input found worth telling (a skipped file, irregular
            slice spacing); carried into ``Answer.warnings``. Never patient data.

    Raises:
        RequestError: on construction, when the question is empty, an image has the wrong type or
            shape, or the number of contexts does not match the number of images.
    """

    images: Sequence[ImageInput]
    question: str
    contexts: list[ImageContext] = field(default_factory=list)
    history: list[Turn] = field(default_factory=list)
    facts: list[KnowledgeFact] = field(default_factory=list)
    report_text: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise RequestError("the question is empty")
        if not self.images:
            raise RequestError("a request needs at least one image")
        for i, image in enumerate(self.images):
            if isinstance(image, np.ndarray):
                if image.dtype != np.uint8 or not (
                    image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
                ):
                    raise RequestError(
                        f"image {i} must be uint8 of shape (H, W) or (H, W, 3), "
                        f"got {image.dtype} {image.shape}"
                    )
            elif not isinstance(image, Image.Image):
                raise RequestError(
                    f"image {i} must be a PIL image or a numpy array, got {type(image).__name__}"
                )
        if self.contexts and len(self.contexts) != len(self.images):
            raise RequestError(f"{len(self.contexts)} image contexts given for {len(self.images)} images")
        if not self.contexts:
            self.contexts = [ImageContext() for _ in self.images]


@dataclass(frozen=True)
class SafetyDecision:
    """A decision of the safety gate, returned with the answer so the app can record it.

    Attributes:
        kind: which rule fired.
        action: ``refuse`` (no generation) or ``warn`` (answered, with this warning).
        reason: one sentence for the clinician, without patient data.
        source: where the trigger was found (``question``, ``report_text``, ``image 1 description``, ...).
    """

    kind: SafetyKind
    action: SafetyAction
    reason: str
    source: str


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate an answer.

    Attributes:
        max_new_tokens: generation length limit.
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass when sampling.
        seed: seed for sampling (explicit, so answers are reproducible).
        contrastive_alpha: visual-contrastive strength ``a``; 0 switches it off.
        contrastive_beta: plausibility cut-off of the contrastive decoding (tokens whose conditioned
            probability is below ``beta`` times the best one are never chosen).
        ablation: also answer with blank images and flag the answer when it does not change.
        abstain_threshold: yes/no answers with a confidence below this are replaced by an abstention.
        scope: what the model was trained on; views outside it are warned about or refused by the
            safety gate. None: no scope check (a model whose scope is not declared).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    contrastive_alpha: float = 0.0
    contrastive_beta: float = 0.1
    ablation: bool = True
    abstain_threshold: float = 0.6
    scope: ModelScope | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise RequestError("max_new_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise RequestError("temperature must be >= 0 and top_p in (0, 1]")
        if self.contrastive_alpha < 0 or not 0 <= self.contrastive_beta < 1:
            raise RequestError("contrastive_alpha must be >= 0 and contrastive_beta in [0, 1)")
        if not 0.5 <= self.abstain_threshold <= 1:
            raise RequestError("abstain_threshold must be in [0.5, 1]")


@dataclass(frozen=True)
class ModelInfo:
    """What model (and adapter) produced an answer.

    Attributes:
        model_version: ``<name>@<short content hash of the weights>``.
        adapter_version: ``<name>@<hash>`` of the active adapter, None without one.
        family: the Hugging Face ``model_type`` (``llava``, ``qwen2_vl``, ...), or ``remote``.
        multi_image: whether the model takes several images in one prompt (else a montage is sent).
    """

    model_version: str
    adapter_version: str | None
    family: str
    multi_image: bool


@dataclass(frozen=True)
class Generation:
    """Raw output of a backend for one prompt.

    Attributes:
        text: the generated text.
        yes_prob: probability of a "yes" token at the first answer step, None if not available.
        no_prob: probability of a "no" token at the same step, None if not available.
    """

    text: str
    yes_prob: float | None = None
    no_prob: float | None = None


@dataclass(frozen=True)
class Answer:
    """The model layer's answer, with everything needed to judge and audit it.

    Attributes:
        text: the answer shown to the clinician (a refusal or abstention message when so decided).
        model: model and adapter versions that produced it.
        grounded: False when the answer did not change with blank images; None when not checked.
        confidence: for a yes/no answer, the model's probability of the polarity the answer states,
            ``p(stated) / (p_yes + p_no)`` at the yes/no token, in [0, 1] (below 0.5 when the text
            contradicts the token probabilities); None when no yes/no token was generated.
        abstained: True when the confidence was below the threshold and the model's text was withheld.
        refused: True when the safety gate refused the request (no generation happened).
        safety: every safety decision taken.
        latency_ms: wall time of the whole request.
        views: what the model saw, one description per view (or the montage's).
        cited_facts: ids of knowledge facts the answer cites.
        raw_text: the model's own text before abstention (empty when refused).
        ablation_text: the answer given with blank images, when checked.
        warnings: the input's warnings (``AskRequest.warnings``) and, when ``grounded`` is False,
            the ungrounded-answer warning; one sentence each, shown with the answer.
    """

    text: str
    model: ModelInfo
    grounded: bool | None
    confidence: float | None
    abstained: bool
    refused: bool
    safety: list[SafetyDecision]
    latency_ms: float
    views: list[str]
    cited_facts: list[str] = field(default_factory=list)
    raw_text: str = ""
    ablation_text: str | None = None
    warnings: list[str] = field(default_factory=list)
