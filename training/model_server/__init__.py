"""loopgram's built-in OpenAI-compatible model server (``loopgram serve-model``).

The bot talks to it with the ``openai`` client exactly as it talks to vLLM in
production.  Backends implement :class:`GenerationBackend`; the default one is the
placeholder :class:`~training.model_server.ngram.NGramBackend`.
"""

from .app import create_app, make_backend, serve, start_server
from .protocol import GenerationBackend, GenerationRequest, UnknownModelError
from .scripted import ScriptedBackend

__all__ = [
    "GenerationBackend",
    "GenerationRequest",
    "ScriptedBackend",
    "UnknownModelError",
    "create_app",
    "make_backend",
    "serve",
    "start_server",
]
