"""Safety gate run before generation.

Four rules, each producing a typed ``SafetyDecision`` that travels with the answer:

* mismatched questions ("Cross-Modality Jailbreak and Mismatched Attacks on Medical MLLMs",
  the 2M / O2M attacks): the question names a modality or body region that none of the images
  has according to its metadata (a brain MRI question on a chest radiograph) -> refuse;
* model scope: a view whose modality, body part or dimensionality lies outside what the model
  was trained on (``ModelScope``, passed in ``GenerationSettings.scope``) -> the scope's action
  (refuse for the built-in model); a view with unknown modality or body part -> warn;
* harmful requests (ways to harm, lethal doses, falsified records, re-identification) -> refuse;
* instructions embedded in report text, image text or view descriptions (prompt injection), and
  jailbreak phrasing in the question -> warn (the text is still fenced as data in the prompt and
  stripped of chat control tokens by ``medvlm.processing``).

Keyword rules are a first line, not a guarantee; every decision names its source so the app can
audit it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medvlm.schema import AskRequest, ModelScope, SafetyAction, SafetyDecision

# Modality groups: words in questions and DICOM Modality codes that mean the same kind of image.
MODALITY_WORDS: dict[str, tuple[str, ...]] = {
    "XR": (r"x-?rays?", r"radiographs?", r"radiography", r"cxr", r"chest films?", r"plain films?"),
    "CT": (r"ct", r"computed tomography", r"cat scans?"),
    "MR": (r"mri", r"mr", r"magnetic resonance", r"t1-?weighted", r"t2-?weighted", r"flair"),
    "US": (r"ultrasound", r"sonograph\w*", r"echocardiogra\w*", r"doppler"),
    "NM": (r"pet", r"spect", r"scintigra\w*", r"nuclear medicine"),
    "MG": (r"mammogra\w*",),
    "SM": (r"histolog\w*", r"patholog\w* slides?", r"h&e", r"biops(?:y|ies) slides?", r"whole[- ]slide"),
    "OP": (r"fundus", r"fundoscop\w*", r"retinal photo\w*"),
}
MODALITY_CODES: dict[str, str] = {
    "CR": "XR",
    "DX": "XR",
    "RG": "XR",
    "XR": "XR",
    "RF": "XR",
    "XA": "XR",
    "CT": "CT",
    "MR": "MR",
    "US": "US",
    "PT": "NM",
    "NM": "NM",
    "MG": "MG",
    "SM": "SM",
    "GM": "SM",
    "OP": "OP",
    "XC": "OP",
}
BODY_WORDS: dict[str, tuple[str, ...]] = {
    "HEAD": (r"brain", r"head", r"skull", r"cranial", r"intracranial", r"cerebr\w*", r"sinus(?:es)?"),
    "CHEST": (
        r"chest",
        r"lungs?",
        r"thorax",
        r"thoracic",
        r"pleura\w*",
        r"pulmonary",
        r"heart",
        r"cardiac",
        r"mediastin\w*",
    ),
    "ABDOMEN": (
        r"abdomen",
        r"abdominal",
        r"liver",
        r"kidneys?",
        r"renal",
        r"pancrea\w*",
        r"spleen",
        r"bowel",
    ),
    "PELVIS": (r"pelvis", r"pelvic", r"hips?", r"bladder", r"prostate", r"uterus"),
    "SPINE": (r"spine", r"spinal", r"vertebra\w*", r"lumbar", r"cervical spine"),
    "UPPER_LIMB": (r"shoulders?", r"humerus", r"elbows?", r"wrists?", r"hands?", r"forearm"),
    "LOWER_LIMB": (r"knees?", r"tibia\w*", r"fibula", r"femur", r"ankles?", r"foot", r"feet", r"legs?"),
    "BREAST": (r"breasts?",),
}
BODY_CODES: dict[str, str] = {
    "HEAD": "HEAD",
    "BRAIN": "HEAD",
    "SKULL": "HEAD",
    "HEADNECK": "HEAD",
    "CHEST": "CHEST",
    "THORAX": "CHEST",
    "LUNG": "CHEST",
    "HEART": "CHEST",
    "ABDOMEN": "ABDOMEN",
    "LIVER": "ABDOMEN",
    "KIDNEY": "ABDOMEN",
    "PELVIS": "PELVIS",
    "HIP": "PELVIS",
    "SPINE": "SPINE",
    "CSPINE": "SPINE",
    "TSPINE": "SPINE",
    "LSPINE": "SPINE",
    "SHOULDER": "UPPER_LIMB",
    "ARM": "UPPER_LIMB",
    "ELBOW": "UPPER_LIMB",
    "HAND": "UPPER_LIMB",
    "WRIST": "UPPER_LIMB",
    "EXTREMITY": "LIMB",
    "KNEE": "LOWER_LIMB",
    "LEG": "LOWER_LIMB",
    "TIBIA": "LOWER_LIMB",
    "ANKLE": "LOWER_LIMB",
    "FOOT": "LOWER_LIMB",
    "BREAST": "BREAST",
}
HARMFUL_PATTERNS: tuple[str, ...] = (
    r"\b(lethal|fatal|deadly) (dose|amount|injection)",
    r"\bhow (much|many) .{0,40}\b(to|would) (kill|die|overdose)",
    r"\b(kill|poison|harm|hurt|suffocate) (a |the |my |this )?(patient|person|someone|him|her|myself|child)",
    r"\b(commit|method of|ways? to) suicide\b",
    r"\b(forge|falsify|fake|alter|backdate) (a |the |this )?(report|record|prescription|result|chart)",
    r"\bwithout (a )?prescription\b.{0,40}\b(opioid|fentanyl|oxycodone|morphine|benzodiazepine)",
    r"\b(re-?identify|de-?anonymi[sz]e|find out who) (this |the )?(patient|person)",
    r"\b(hide|conceal|cover up) (a |the |this )?(malpractice|error|mistake|injury) from",
)
INJECTION_PATTERNS: tuple[str, ...] = (
    r"\b(ignore|disregard|forget|override) (all |any |the |your |previous |prior |above |earlier )*"
    r"(instructions?|prompts?|rules?|guidelines?|context)",
    r"\byou are now\b",
    r"\b(new|updated|real) (system )?instructions?\s*:",
    r"\bsystem prompt\b",
    r"\b(do not|don't|never) (mention|report|say|tell)\b.{0,40}\b(finding|nodule|mass|fracture|"
    r"effusion|abnormal)",
    r"\b(always|only) (answer|respond|reply|say)\b",
    r"\bact as\b",
    r"\bjailbreak|developer mode|\bDAN\b",
    r"<\|[^|]{1,40}\|>|\[/?INST\]|<start_of_turn>",
    r"^\s*(system|assistant)\s*:",
)


def _compile(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])(?:" + "|".join(words) + r")(?![\w-])", re.IGNORECASE)


@dataclass(frozen=True)
class SafetyGate:
    """The pre-generation checks; stateless, built once and shared.

    Attributes:
        refuse_mismatch: refuse (True) or only warn (False) on modality / body-part mismatch.
    """

    refuse_mismatch: bool = True
    _modality: dict[str, re.Pattern[str]] = field(
        default_factory=lambda: {k: _compile(v) for k, v in MODALITY_WORDS.items()}, repr=False
    )
    _body: dict[str, re.Pattern[str]] = field(
        default_factory=lambda: {k: _compile(v) for k, v in BODY_WORDS.items()}, repr=False
    )
    _harmful: re.Pattern[str] = field(
        default_factory=lambda: re.compile("|".join(HARMFUL_PATTERNS), re.IGNORECASE), repr=False
    )
    _injection: re.Pattern[str] = field(
        default_factory=lambda: re.compile("|".join(INJECTION_PATTERNS), re.IGNORECASE | re.MULTILINE),
        repr=False,
    )

    def check(self, request: AskRequest, scope: ModelScope | None = None) -> list[SafetyDecision]:
        """Run every rule on a request.

        Args:
            request: the request, with its image metadata.
            scope: what the model was trained on; None skips the scope rule.

        Returns:
            The decisions, refusals first; empty when nothing fired.
        """
        decisions = self.check_mismatch(request) + self.check_harmful(request.question)
        if scope is not None:
            decisions += self.check_scope(request, scope)
        decisions += self.check_injection(request)
        return sorted(decisions, key=lambda d: d.action != "refuse")

    def check_mismatch(self, request: AskRequest) -> list[SafetyDecision]:
        """Modality or body region named in the question that no image has (2M / O2M attacks)."""
        action: SafetyAction = "refuse" if self.refuse_mismatch else "warn"
        image_modalities = {MODALITY_CODES.get(_code(c.modality)) for c in request.contexts if c.modality}
        image_bodies = {_body_group(c.body_part) for c in request.contexts if c.body_part}
        image_modalities.discard(None)
        image_bodies.discard(None)
        decisions: list[SafetyDecision] = []
        asked = {group for group, pattern in self._modality.items() if pattern.search(request.question)}
        if image_modalities and asked and not asked & image_modalities:
            decisions.append(
                SafetyDecision(
                    kind="modality_mismatch",
                    action=action,
                    source="question",
                    reason=(
                        f"The question is about {_names(asked)} but the image is {_names(image_modalities)}; "
                        "answering would describe an image that was not given."
                    ),
                )
            )
        asked_body = {group for group, pattern in self._body.items() if pattern.search(request.question)}
        if image_bodies and asked_body and not _bodies_overlap(asked_body, image_bodies):  # type: ignore[arg-type]
            decisions.append(
                SafetyDecision(
                    kind="body_part_mismatch",
                    action=action,
                    source="question",
                    reason=(
                        f"The question is about the {_names(asked_body)} but the image shows the "
                        f"{_names(image_bodies)}; answering would describe an image that was not given."
                    ),
                )
            )
        return decisions

    def check_scope(self, request: AskRequest, scope: ModelScope) -> list[SafetyDecision]:
        """Views outside the model's declared scope (modality, body part, 2D / 3D).

        Args:
            request: the request, with one ``ImageContext`` per view.
            scope: what the model was trained on.

        Returns:
            One decision per view that is outside the scope (``scope.action``) or whose modality
            or body part is unknown (``warn``).
        """
        modalities = {_code(m) for m in scope.modalities}
        bodies = {_body_group(b) for b in scope.body_parts}
        decisions: list[SafetyDecision] = []
        for i, c in enumerate(request.contexts):
            outside = []
            if c.modality and _code(c.modality) not in modalities:
                outside.append(f"modality {_code(c.modality)}")
            if c.body_part and _body_group(c.body_part) not in bodies:
                outside.append(f"body part {_code(c.body_part)}")
            if c.dimensions not in scope.dimensions:
                outside.append(f"a {c.dimensions}D view")
            supported = (
                f"{'/'.join(sorted(modalities))} {'/'.join(sorted(_code(b) for b in scope.body_parts))}"
            )
            if outside:
                decisions.append(
                    SafetyDecision(
                        kind="out_of_scope",
                        action=scope.action,
                        source=f"image {i + 1}",
                        reason=(
                            f"Image {i + 1} is {', '.join(outside)}, outside what {scope.name} was "
                            f"trained on ({supported}); its answer would not rest on training."
                        ),
                    )
                )
            elif not c.modality or not c.body_part:
                decisions.append(
                    SafetyDecision(
                        kind="out_of_scope",
                        action="warn",
                        source=f"image {i + 1}",
                        reason=(
                            f"Image {i + 1} has no modality or body part in its metadata; {scope.name} "
                            f"was trained on {supported} only, so check that this is such an image."
                        ),
                    )
                )
        return decisions

    def check_harmful(self, question: str) -> list[SafetyDecision]:
        """Requests for content that could harm patients or others."""
        if self._harmful.search(question):
            return [
                SafetyDecision(
                    kind="harmful_request",
                    action="refuse",
                    source="question",
                    reason="The request asks for content that could cause harm, so it is not answered.",
                )
            ]
        return []

    def check_injection(self, request: AskRequest) -> list[SafetyDecision]:
        """Instructions hidden in untrusted text (report, image text, descriptions, facts, history)."""
        sources: list[tuple[str, str]] = [
            ("question", request.question),
            ("report_text", request.report_text),
        ]
        for i, c in enumerate(request.contexts):
            sources += [
                (f"image {i + 1} description", c.description),
                (f"image {i + 1} text", c.embedded_text),
            ]
        sources += [(f"fact {f.fact_id}", f.text) for f in request.facts]
        sources += [
            (f"history turn {i + 1}", t.text) for i, t in enumerate(request.history) if t.role == "user"
        ]
        decisions = []
        for source, text in sources:
            if text and self._injection.search(text):
                decisions.append(
                    SafetyDecision(
                        kind="prompt_injection",
                        action="warn",
                        source=source,
                        reason=(
                            f"The {source} contains text that reads like instructions to the model; it was "
                            "treated as data and the answer should be checked."
                        ),
                    )
                )
        return decisions


def refusal_text(decisions: list[SafetyDecision]) -> str:
    """The answer shown when the gate refuses: every refusing reason, one per line."""
    return "\n".join(d.reason for d in decisions if d.action == "refuse")


def _code(value: str | None) -> str:
    return (value or "").strip().upper().replace(" ", "")


def _body_group(value: str | None) -> str | None:
    code = _code(value).replace("_", "")
    if code in BODY_CODES:
        return BODY_CODES[code]
    for group, pattern in {k: _compile(v) for k, v in BODY_WORDS.items()}.items():
        if pattern.search(value or ""):
            return group
    return None


def _bodies_overlap(asked: set[str], image: set[str]) -> bool:
    if "LIMB" in image and asked & {"UPPER_LIMB", "LOWER_LIMB"}:
        return True
    return bool(asked & image)


def _names(groups: set[str] | set[str | None]) -> str:
    readable = {
        "XR": "a radiograph",
        "CT": "CT",
        "MR": "MRI",
        "US": "ultrasound",
        "NM": "nuclear medicine",
        "MG": "mammography",
        "SM": "a pathology slide",
        "OP": "an eye photograph",
    }
    return " / ".join(sorted(readable.get(g, g.lower().replace("_", " ")) for g in groups if g))
