"""The clinician web app (Gradio): sign in, upload a study, see what the model saw, ask, correct, review.

Modules, one job each:

- ``errors``: :class:`AppError`, the one-sentence message shown in the UI.
- ``session``: who is signed in (a pseudonymous actor and the role the store holds for them).
- ``cases``: an upload → the views ``data_prep`` reads → the image(s) the model receives → the
  de-identified case PNG saved as ``$MEDVLM_HOME/cases/<sha256>.png`` for the retraining export.
- ``render``: answers, facts and review queues as Markdown (pure functions, escaped).
- ``service``: the app's operations as plain functions over an ``Assistant``, a ``Store`` and a
  fact source; testable without Gradio.
- ``ui``: ``create_app(service)``, the Gradio Blocks layout calling the service, nothing else.

Gradio is imported only by ``ui`` (and only when the app is built), so the rest imports cheaply.
See docs/APP.md.
"""
