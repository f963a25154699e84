"""Subcommand ``app``: the clinician web app (Gradio) over the model, the knowledge graph and the database.

``medvlm app [--host 127.0.0.1] [--port 7860] [--db-url URL] [--model DIR [--adapter DIR] | --server URL]``
builds everything once here (the entry point) and passes it down: the site key, the database
(SQLite under ``$MEDVLM_HOME`` is created when absent; a PostgreSQL database must have been made
with ``medvlm db init``), the model (the built-in one by default), the knowledge-graph retriever and
the case folder ``$MEDVLM_HOME/cases``, then serves ``app.web.ui.create_app`` until interrupted.

Gradio never phones home: analytics are off (``GRADIO_ANALYTICS_ENABLED=False``, set here, and
``analytics_enabled=False``), there is no share link, and the page uses system fonts only.

Exit codes: 0 stopped by the user, 1 a failed start (database, model, port), 2 a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.web.service import FactSource, WebService

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
ANALYTICS_ENV = "GRADIO_ANALYTICS_ENABLED"


def register(sub: Any) -> None:
    """Add ``medvlm app`` to the top-level subparsers."""
    from app.commands.db import DATABASE_URL_ENV, DEFAULT_DB_NAME
    from app.commands.model import API_KEY_ENV, positive_int

    parser = sub.add_parser(
        "app",
        allow_abbrev=False,
        help="start the clinician web app (Gradio) on 127.0.0.1",
        description=(
            "The clinician web app: sign in, upload a study, see what the model saw, ask, correct, "
            "review. Research software, not for clinical use."
        ),
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=positive_int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--db-url",
        default=None,
        help=f"database URL (default ${DATABASE_URL_ENV}, else sqlite:///$MEDVLM_HOME/{DEFAULT_DB_NAME})",
    )
    parser.add_argument("--model", type=Path, help="local model folder (default: the built-in model)")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter folder")
    parser.add_argument("--server", help="OpenAI-compatible server URL (vLLM, SGLang, medvlm serve-api)")
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the server API key (default: ${API_KEY_ENV})",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="server timeout in seconds")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads for the model")
    parser.add_argument("--no-kg", action="store_true", help="do not retrieve knowledge-graph facts")
    parser.add_argument(
        "--max-upload-mb", type=positive_int, default=512, help="largest upload accepted (default 512 MB)"
    )
    parser.add_argument(
        "--cases",
        type=Path,
        default=None,
        help="folder of the saved case images (default $MEDVLM_HOME/cases)",
    )
    parser.set_defaults(func=app_handler)


class StartError(Exception):
    """The app cannot start; the message is one sentence naming the step."""


def open_store(url: str, key: Any) -> Any:
    """Open the database, creating an SQLite one (tables, audit head) when it is absent.

    Raises:
        StartError: when the database cannot be reached, created or opened.
    """
    from sqlalchemy.engine import make_url

    from app.store import Store, StoreError, init_db, make_engine

    try:
        engine = make_engine(url)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            init_db(engine, key)  # idempotent
        return Store.open(engine, key)
    except (StoreError, OSError) as e:
        raise StartError(f"opening the database failed: {e}") from e


def load_assistant(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The assistant, its generation settings (scope) and the notice to show.

    Raises:
        StartError: when the server is unreachable or the model cannot be loaded.
    """
    from app.commands import model as model_cmd
    from medvlm import GenerationSettings, MedVLMError
    from medvlm.assistant import Assistant

    try:
        if args.server:
            from medvlm.http_backend import HTTPBackend

            backend = HTTPBackend(
                args.server, api_key=model_cmd.read_api_key(args.api_key_file), timeout=args.timeout
            )
            backend.info()
            return Assistant(backend), GenerationSettings(), model_cmd.RESEARCH_NOTICE
        choice = model_cmd.choose_model(args.model, args.adapter)
        backend = model_cmd.load_backend(choice, args.device, args.threads)
    except (model_cmd.StepError, model_cmd.UsageError, MedVLMError) as e:
        raise StartError(f"loading the model failed: {e}") from e
    notice = model_cmd.SYNTHETIC_NOTICE if choice.builtin else model_cmd.RESEARCH_NOTICE
    return Assistant(backend), GenerationSettings(scope=choice.scope), notice


def load_facts(no_kg: bool) -> FactSource | None:
    """The knowledge-graph fact source, built once; when it cannot be built, every answer says so."""
    if no_kg:
        return None
    from app.web.service import facts_from_retriever

    try:
        from app.commands.model import quiet_hugging_face
        from knowledge_graph.retriever import Retriever

        quiet_hugging_face()
        return facts_from_retriever(Retriever.from_default())
    except Exception as e:  # the app still answers, without facts, and says why on every answer
        logger.warning(
            "the knowledge graph is unavailable (%s); answers will carry no facts", type(e).__name__
        )
        reason = type(e).__name__

        def unavailable(question: str) -> Any:
            raise RuntimeError(f"the knowledge graph could not be loaded at start ({reason})")

        return unavailable


def build_service(args: argparse.Namespace) -> WebService:
    """Everything the app needs, built once: key, store, assistant, facts, case folder.

    Raises:
        StartError: for a failed step (one sentence).
    """
    from app.commands.db import CASES_DIR_NAME, database_url
    from app.store import AuditKey
    from app.web.cases import MIB, UploadLimits
    from app.web.service import WebService
    from data_prep.errors import PseudonymKeyError
    from data_prep.pseudonym import resolve_key
    from medvlm.builtin import default_home

    try:
        site_key = resolve_key(create=True)
    except PseudonymKeyError as e:
        raise StartError(str(e)) from e
    store = open_store(database_url(args.db_url), AuditKey.derive(site_key))
    assistant, settings, notice = load_assistant(args)
    cases_dir = (args.cases or default_home() / CASES_DIR_NAME).expanduser().resolve()
    return WebService(
        store=store,
        assistant=assistant,
        key=site_key,
        cases_dir=cases_dir,
        notice=notice,
        settings=settings,
        facts=load_facts(args.no_kg),
        limits=UploadLimits(max_upload_bytes=args.max_upload_mb * MIB),
    )


def app_handler(args: argparse.Namespace) -> int:
    """Run ``medvlm app`` until interrupted."""
    from medvlm.server import is_loopback

    if args.server and (args.model or args.adapter):
        print("medvlm app: give either --server or --model/--adapter, not both", file=sys.stderr)
        return 2
    os.environ[ANALYTICS_ENV] = "False"  # before gradio is imported: no usage statistics, no version check
    if not is_loopback(args.host):
        print(
            f"medvlm app: WARNING binding {args.host} (not loopback): the app has no passwords yet; "
            "put it behind the site's authenticating proxy",
            file=sys.stderr,
        )
    try:
        service = build_service(args)
    except StartError as e:
        print(f"medvlm app: {e}", file=sys.stderr)
        return 1
    from app.web.ui import create_app, launch

    demo = create_app(service)
    print(f"medvlm app: serving on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    try:
        launch(
            demo, host=args.host, port=args.port, max_upload_bytes=service.limits.max_upload_bytes, block=True
        )
    except OSError as e:
        print(f"medvlm app: cannot bind {args.host}:{args.port} ({type(e).__name__})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        service.store.engine.dispose()
    return 0
