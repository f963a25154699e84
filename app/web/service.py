"""The web app's operations as plain functions over an ``Assistant``, a ``Store`` and a fact source.

Every method either returns a typed result or raises :class:`~app.web.errors.AppError` with one
sentence, leaving what the user had (session, case, typed text) untouched, so nothing is lost. The
UI (``app.web.ui``) calls these and nothing else; tests call them without Gradio.

What reaches the store: pseudonymous actor and study ids, the question and answers (scrubbed by
the store), versions, flags, cited fact ids and the case image's content id. Never a file name,
a DICOM header value or a login.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from app.store import InteractionCreate, StoreError
from app.store.repository import ASKERS, REVIEWERS
from app.web.cases import Case, ModelInput, UploadLimits, case_png, load_case, model_input, save_case_image
from app.web.errors import AppError
from app.web.session import Session, sign_in

if TYPE_CHECKING:
    from app.store import CorrectionRecord, InteractionRecord, ReviewRecord, Store
    from data_prep.pseudonym import PseudonymKey
    from medvlm import Answer, GenerationSettings, KnowledgeFact
    from medvlm.assistant import Assistant

logger = logging.getLogger(__name__)

FactSource = Callable[[str], "list[KnowledgeFact]"]
"""Question → cited facts (the knowledge-graph retriever, built once by the entry point)."""
MAX_QUESTION_CHARS: Final = 2000
MAX_CORRECTION_CHARS: Final = 4000
QUEUE_LIMIT: Final = 50


@dataclass(frozen=True)
class OpenedCase:
    """An upload read and ready: the case and exactly what the model will receive."""

    case: Case
    model_input: ModelInput


@dataclass(frozen=True)
class AskResult:
    """One answered and recorded question.

    Attributes:
        answer: the model layer's answer.
        facts: the facts offered to the model.
        notes: the app's own warnings (knowledge graph unavailable).
        interaction_id: the stored interaction (what a correction refers to).
        image_sha256: the content id of the saved case image.
    """

    answer: Answer
    facts: list[KnowledgeFact]
    notes: list[str]
    interaction_id: int
    image_sha256: str


def facts_from_retriever(retriever: object, limit: int = 8) -> FactSource:
    """A fact source over a ``knowledge_graph.retriever.Retriever`` (ids made unique and citable).

    Args:
        retriever: anything with ``retrieve(text, k) -> Retrieval`` (its ``facts`` have ``node``,
            ``relation``, ``text`` and ``source``).
        limit: the most facts offered to the model.

    Returns:
        The fact source.
    """
    from app.commands.model import citable_facts

    def facts(question: str) -> list[KnowledgeFact]:
        return citable_facts(retriever.retrieve(question, k=5).facts, limit)  # type: ignore[attr-defined]

    return facts


@dataclass(frozen=True)
class WebService:
    """The app's operations (see the module docstring); built once by ``medvlm app`` or a test.

    Attributes:
        store: the database.
        assistant: answers requests (safety gate, grounding check, abstention).
        key: the site's pseudonymisation key (actor and study pseudonyms).
        cases_dir: where case images are saved (``$MEDVLM_HOME/cases``).
        notice: the research / synthetic-data notice shown on every page.
        settings: generation settings (the built-in model's scope included).
        facts: the fact source, or None to answer without knowledge-graph facts.
        limits: upload caps.
    """

    store: Store
    assistant: Assistant
    key: PseudonymKey
    cases_dir: Path
    notice: str
    settings: GenerationSettings | None = None
    facts: FactSource | None = None
    limits: UploadLimits = field(default_factory=UploadLimits)

    # -- people ---------------------------------------------------------------------------------

    def sign_in(self, login: str, role: str) -> Session:
        """Sign in by login and role (``app.web.session.sign_in``).

        Raises:
            AppError: see ``sign_in``.
        """
        return sign_in(self.store, self.key, login, role)

    # -- cases and questions --------------------------------------------------------------------

    def open_case(self, session: Session | None, upload: Path | None) -> OpenedCase:
        """Read an upload and compute what the model will see.

        Args:
            session: who is signed in (anyone may look; asking is checked later).
            upload: the uploaded file.

        Returns:
            The case and the model's input images and descriptions.

        Raises:
            AppError: when nobody is signed in, no file was given, or the file cannot be read.
        """
        if session is None:
            raise AppError("Sign in first.")
        if upload is None:
            raise AppError("Choose a file to upload.")
        case = load_case(upload, key=self.key, limits=self.limits)
        return OpenedCase(case=case, model_input=self._model_input(case))

    def _model_input(self, case: Case) -> ModelInput:
        try:
            multi_image = self.assistant.backend.info().multi_image
        except Exception as e:  # a remote backend that went away: say so, keep the case
            raise AppError(f"The model is not reachable ({type(e).__name__}); try again later.") from e
        return model_input(case, multi_image=multi_image)

    def ask(self, session: Session | None, case: Case | None, question: str) -> AskResult:
        """Answer a question about the case, save the case image and record the interaction.

        Args:
            session: who asks (a clinician or reviewer: the store's ``ASKERS``).
            case: the uploaded case.
            question: the question.

        Returns:
            The answer, the facts offered, the app's notes and the interaction's id.

        Raises:
            AppError: not signed in, wrong role, no case, an empty or over-long question, a model
                failure (nothing is recorded), or a database failure.
        """
        if session is None:
            raise AppError("Sign in first.")
        if session.role not in ASKERS:
            raise AppError(f"{_a(session.role)} cannot ask questions; sign in as a clinician or reviewer.")
        if case is None:
            raise AppError("Upload a study first.")
        question = question.strip()
        if not question:
            raise AppError("Type a question.")
        if len(question) > MAX_QUESTION_CHARS:
            raise AppError(f"The question is longer than {MAX_QUESTION_CHARS} characters.")
        facts, notes = self._facts(question)
        answer = self._answer(case, question, facts)
        seen = self._model_input(case)
        sha = save_case_image(self.cases_dir, case_png(seen.images))
        try:
            record = self.store.record_interaction(
                actor=session.actor,
                data=InteractionCreate.from_answer(
                    answer, study_pseudonym=case.study_pseudonym, question=question, image_sha256=sha
                ),
            )
        except StoreError as e:
            raise AppError(f"The answer could not be recorded, so it is not shown: {e}") from e
        logger.info("interaction %d recorded", record.id)
        return AskResult(answer=answer, facts=facts, notes=notes, interaction_id=record.id, image_sha256=sha)

    def _facts(self, question: str) -> tuple[list[KnowledgeFact], list[str]]:
        if self.facts is None:
            return [], []
        try:
            return self.facts(question), []
        except Exception as e:  # the knowledge graph degrades, never blocks the answer
            logger.info("knowledge retrieval failed (%s)", type(e).__name__)
            return [], [f"Knowledge retrieval failed ({type(e).__name__}); answered without facts."]

    def _answer(self, case: Case, question: str, facts: list[KnowledgeFact]) -> Answer:
        from app.commands.model import views_to_request
        from medvlm import MedVLMError

        try:
            request = views_to_request(list(case.views), question, facts)
        except MedVLMError as e:
            raise AppError(f"The question could not be sent to the model: {e}") from e
        try:
            return self.assistant.ask(request, self.settings)
        except Exception as e:  # any backend failure: one sentence, nothing recorded
            logger.info("the model failed to answer (%s)", type(e).__name__)
            raise AppError(
                f"The model could not answer ({type(e).__name__}); nothing was recorded. Try again."
            ) from e

    # -- corrections and reviews ----------------------------------------------------------------

    def correct(self, session: Session | None, interaction_id: int | None, text: str) -> CorrectionRecord:
        """Propose a corrected answer for an interaction (pending until a reviewer decides).

        Raises:
            AppError: not signed in, no answer to correct, a refused request or an abstention without
                model text, empty or over-long text,
                or a refusal of the store (wrong role, unknown interaction).
        """
        if session is None:
            raise AppError("Sign in first.")
        if interaction_id is None:
            raise AppError("Ask a question first: there is no answer to correct.")
        text = text.strip()
        if not text:
            raise AppError("Type the corrected answer.")
        if len(text) > MAX_CORRECTION_CHARS:
            raise AppError(f"The correction is longer than {MAX_CORRECTION_CHARS} characters.")
        try:
            asked = self.store.get_interaction(interaction_id)
            if asked.refused:
                # A refusal is not the model's answer: as a DPO "rejected" it would teach the model to
                # answer out of its scope.
                raise AppError("A refused request has no model answer to correct.")
            if asked.model_text is None:
                # An abstention message is not the model's answer either; the export rejects the model's
                # own text (kept as model_answer), so without any there is nothing to correct.
                raise AppError(
                    "The model abstained without an answer of its own, so there is nothing to correct."
                )
            return self.store.propose_correction(
                interaction_id=interaction_id, author=session.actor, corrected_answer=text
            )
        except StoreError as e:
            raise AppError(f"The correction was not saved: {e}") from e

    def review_queue(self, session: Session | None) -> list[tuple[InteractionRecord, CorrectionRecord]]:
        """The pending corrections, oldest first, for a reviewer.

        Raises:
            AppError: when nobody is signed in, the role is not a reviewer, or the database fails.
        """
        self._check_reviewer(session)
        try:
            return self.store.pending_corrections(limit=QUEUE_LIMIT)
        except StoreError as e:
            raise AppError(f"The review queue could not be read: {e}") from e

    def review(
        self, session: Session | None, correction_id: int | None, decision: Literal["approved", "rejected"]
    ) -> ReviewRecord:
        """Approve or reject a pending correction (the store refuses one's own and a second review).

        Raises:
            AppError: not a reviewer, no correction chosen, or a refusal of the store.
        """
        reviewer = self._check_reviewer(session)
        if correction_id is None:
            raise AppError("Enter the number of the correction to review.")
        try:
            return self.store.review_correction(
                correction_id=int(correction_id), reviewer=reviewer.actor, decision=decision
            )
        except StoreError as e:
            raise AppError(f"The review was not saved: {e}") from e

    @staticmethod
    def _check_reviewer(session: Session | None) -> Session:
        if session is None:
            raise AppError("Sign in first.")
        if session.role not in REVIEWERS:
            raise AppError(f"{_a(session.role)} cannot review corrections; sign in as a reviewer.")
        return session


def _a(role: str) -> str:
    """``A clinician`` / ``An admin``."""
    return f"{'An' if role[:1] in 'aeiou' else 'A'} {role}"
