"""The Gradio Blocks layout: handlers that call :class:`~app.web.service.WebService`, then the wiring.

Per-user data (who is signed in, the case, the last interaction) lives in ``gr.State``, never in
module variables (those would be shared by every user). A handler turns an
:class:`~app.web.errors.AppError` into one sentence in the section's status line and leaves every
other output unchanged (``gr.skip()``), so a bad upload or a failed model call loses nothing.

The uploaded file itself is deleted from Gradio's upload cache as soon as it has been read: only
the de-identified 8-bit images the model sees are kept (in the session, and as the case PNG when a
question is answered). No analytics, no share link, no fonts or scripts from other servers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from app.web import render
from app.web.errors import AppError
from app.web.session import ROLE_NAMES, Session

if TYPE_CHECKING:
    import gradio as gr

    from app.web.cases import Case
    from app.web.service import WebService

logger = logging.getLogger(__name__)

SYSTEM_FONTS: Final = ("ui-sans-serif", "system-ui", "sans-serif")
MONO_FONTS: Final = ("ui-monospace", "monospace")
UPLOAD_LABEL: Final = "DICOM file, zip of a DICOM study or series, PNG/JPEG, or pathology slide"


def _problem(error: BaseException) -> str:
    """The status line for a failed operation (an unexpected error is named by its type only)."""
    if isinstance(error, AppError):
        return f"⚠ {render.escape(str(error))}"
    logger.info("unexpected %s in a web handler", type(error).__name__, exc_info=True)
    return f"⚠ Internal error ({type(error).__name__}); nothing was lost, try again."


def _discard_upload(upload: str | None) -> None:
    """Delete the raw upload from Gradio's cache (it may carry a DICOM header with PHI)."""
    if upload:
        try:
            Path(upload).unlink(missing_ok=True)
        except OSError:
            logger.info("an upload could not be deleted from the cache")


def _handlers(service: WebService) -> dict[str, Callable[..., Any]]:
    """The event handlers, each a thin call into the service; ``gr.skip()`` keeps an output as it was."""
    import gradio as gr

    def on_sign_in(current: Session | None, login: str, role: str) -> tuple[Any, ...]:
        try:
            session = service.sign_in(login or "", role or "")
        except Exception as e:
            still = f" Still signed in as **{current.label}**." if current else ""
            return gr.skip(), _problem(e) + still, gr.skip()
        return session, f"Signed in as **{session.label}**.", ""  # the login box is cleared

    def on_upload(session: Session | None, upload: str | None) -> tuple[Any, ...]:
        try:
            opened = service.open_case(session, Path(upload) if upload else None)
        except Exception as e:
            return gr.skip(), gr.skip(), gr.skip(), _problem(e), None
        finally:
            _discard_upload(upload)
        seen = opened.model_input
        gallery = list(zip(seen.images, seen.descriptions, strict=True))
        views = render.views_markdown(seen.descriptions, opened.case.warnings)
        return opened.case, gallery, views, "Study loaded. Ask a question.", None

    def on_ask(session: Session | None, case: Case | None, question: str) -> tuple[Any, ...]:
        try:
            result = service.ask(session, case, question or "")
        except Exception as e:
            return gr.skip(), gr.skip(), _problem(e)
        return result.interaction_id, render.answer_markdown(result), ""

    def on_correct(session: Session | None, interaction_id: int | None, text: str) -> tuple[Any, ...]:
        try:
            record = service.correct(session, interaction_id, text or "")
        except Exception as e:
            return gr.skip(), _problem(e)
        return "", f"Correction {record.id} saved; it waits for a reviewer."

    def on_queue(session: Session | None) -> str:
        try:
            pairs = service.review_queue(session)
        except Exception as e:
            return _problem(e)
        return render.queue_markdown(pairs, session.actor if session else "")

    def review(decision: Literal["approved", "rejected"]) -> Callable[..., tuple[str, str]]:
        def on_review(session: Session | None, correction_id: float | None) -> tuple[str, str]:
            try:
                record = service.review(
                    session, None if correction_id is None else int(correction_id), decision
                )
            except Exception as e:
                return _problem(e), gr.skip()
            return f"Correction {record.correction_id} {record.decision}.", on_queue(session)

        return on_review

    return {
        "sign_in": on_sign_in,
        "upload": on_upload,
        "ask": on_ask,
        "correct": on_correct,
        "queue": on_queue,
        "approve": review("approved"),
        "reject": review("rejected"),
    }


def create_app(service: WebService) -> gr.Blocks:
    """Build the clinician web app over a service (nothing global: every user gets their own state).

    Args:
        service: the app's operations (store, assistant, key, case folder, notice).

    Returns:
        The Gradio Blocks; start it with :func:`launch`.
    """
    import gradio as gr

    on = _handlers(service)
    with gr.Blocks(title="medvlm", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        session = gr.State(None)
        case = gr.State(None)
        interaction = gr.State(None)
        gr.Markdown(render.banner(service.notice), elem_id="banner")
        with gr.Row():
            login = gr.Textbox(label="Login (staff id; only its keyed hash is kept)", elem_id="login")
            role = gr.Radio(list(ROLE_NAMES), value="clinician", label="Role", elem_id="role")
            sign_in = gr.Button("Sign in", elem_id="sign-in")
        who = gr.Markdown("Not signed in.", elem_id="who")
        with gr.Tab("Ask"):
            upload = gr.File(label=UPLOAD_LABEL, type="filepath", elem_id="upload")
            case_status = gr.Markdown(elem_id="case-status")
            seen = gr.Gallery(
                label="What the model sees",
                elem_id="seen",
                interactive=False,
                height=520,
                object_fit="contain",
                columns=2,
            )
            views = gr.Markdown(elem_id="views")
            question = gr.Textbox(label="Question", elem_id="question")
            ask = gr.Button("Ask", variant="primary", elem_id="ask")
            ask_status = gr.Markdown(elem_id="ask-status")
            answer = gr.Markdown(elem_id="answer")
            correction = gr.Textbox(label="Corrected answer", lines=3, elem_id="correction")
            correct = gr.Button("Submit correction", elem_id="submit-correction")
            correction_status = gr.Markdown(elem_id="correction-status")
        with gr.Tab("Review"):
            refresh = gr.Button("Show pending corrections", elem_id="refresh-queue")
            queue = gr.Markdown(elem_id="queue")
            correction_id = gr.Number(label="Correction number", precision=0, elem_id="correction-id")
            with gr.Row():
                approve = gr.Button("Approve", elem_id="approve")
                reject = gr.Button("Reject", elem_id="reject")
            review_status = gr.Markdown(elem_id="review-status")

        sign_in.click(on["sign_in"], [session, login, role], [session, who, login])
        upload.upload(on["upload"], [session, upload], [case, seen, views, case_status, upload])
        # One model answers one question at a time (an in-process model is not re-entrant).
        ask.click(
            on["ask"], [session, case, question], [interaction, answer, ask_status], concurrency_limit=1
        )
        correct.click(on["correct"], [session, interaction, correction], [correction, correction_status])
        refresh.click(on["queue"], [session], [queue])
        approve.click(on["approve"], [session, correction_id], [review_status, queue])
        reject.click(on["reject"], [session, correction_id], [review_status, queue])
    return demo


def launch(demo: gr.Blocks, *, host: str, port: int, max_upload_bytes: int, block: bool = True) -> None:
    """Start the app: no share link, no analytics, no server-side rendering, system fonts only.

    Args:
        demo: from :func:`create_app`.
        host: the address to bind (``127.0.0.1`` by default at the command line).
        port: the port.
        max_upload_bytes: Gradio refuses larger uploads before they are stored.
        block: wait until interrupted (False: return once serving, as tests do).
    """
    import gradio as gr

    theme = gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        max_file_size=max_upload_bytes,
        ssr_mode=False,
        mcp_server=False,
        footer_links=[],
        theme=theme,
        quiet=True,
    )
