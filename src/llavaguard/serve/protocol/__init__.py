"""Request and response models of the HTTP API, one module per endpoint group; the OpenAPI
document is built from them. Pure data: no model, no I/O, no knowledge of how answers are made.
"""

from llavaguard.serve.protocol.assess import AssessRequest
from llavaguard.serve.protocol.chat import ChatCompletionResponse, ChatRequest
from llavaguard.serve.protocol.errors import ErrorResponse
from llavaguard.serve.protocol.models import Health, ModelList
from llavaguard.serve.protocol.moderations import ModerationRequest, ModerationResponse

__all__ = [
    "AssessRequest",
    "ChatCompletionResponse",
    "ChatRequest",
    "ErrorResponse",
    "Health",
    "ModelList",
    "ModerationRequest",
    "ModerationResponse",
]
