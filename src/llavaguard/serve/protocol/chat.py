"""POST /v1/chat/completions: the subset of OpenAI's chat completions that image safeguards
need (what the remote engine and the official client send), plus vLLM's extensions."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llavaguard.errors import PolicyError
from llavaguard.policy.loading import check_depth

# A response_format schema is compiled into a grammar for the model: a bounded one, so a
# request cannot make the compiler (or the JSON encoder) recurse or work without end.
MAX_SCHEMA_DEPTH = 64  # nested JSON objects and arrays (a schema object takes 2 a level)
SEED_RANGE = (-(2**63), 2**63 - 1)  # a signed 64-bit integer, what engines take (vLLM too)


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        """The message's text parts, joined (images left out)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.text or "" for p in self.content if p.type == "text")


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat completions that image safeguards need, plus vLLM's
    ``continue_final_message`` / ``add_generation_prompt``, ``top_k`` and ``min_tokens``."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Default 0: greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    stream: bool = False
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    continue_final_message: bool = False
    add_generation_prompt: bool = True

    @field_validator("response_format")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """A ``json_schema`` nested at most ``MAX_SCHEMA_DEPTH`` deep, so measuring it cannot
        recurse past Python's limit (its size against ``--max-schema-kb`` and whether the
        grammar compiler takes it are the handler's checks, off the event loop)."""
        spec = (value or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict | list):
            return value
        try:  # the policy loader's check: iterative, linear
            check_depth(schema, "the schema", MAX_SCHEMA_DEPTH)
        except PolicyError:
            raise ValueError(
                f"the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
            ) from None
        return value


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]

    @classmethod
    def of(cls, token: str, logprob: float, **more: Any) -> Self:
        """With the token's UTF-8 bytes, as OpenAI reports them."""
        return cls(token=token, logprob=logprob, bytes=list(token.encode()), **more)


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    finish_reason: Literal["stop", "length"] = "stop"
    logprobs: ChoiceLogprobs | None = None
    message: AssistantMessage


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
