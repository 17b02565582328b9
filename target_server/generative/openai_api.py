"""The OpenAI request and answer formats of /v1/completions and /v1/chat/completions.

Requests are checked field by field and refused as OpenAI refuses them: status 400 (404 for an
unknown model) with `{"error": {"message", "type", "param", "code"}}`. Fields this model has no
use for (top_p, presence_penalty, logprobs, user, ...) are accepted and ignored, as vLLM does;
`ignore_eos` and `min_tokens` change nothing (tinylm has no end-of-sequence token).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
DEFAULT_MAX_TOKENS = 16


class ApiError(Exception):
    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def document(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Request:
    """A checked request: the prompt as bytes (chat messages through tinylm's template)."""

    chat: bool
    model: str
    prompt: bytes
    max_tokens: int
    temperature: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def chat_template(messages: list[dict[str, str]]) -> str:
    """tinylm's chat template: one `role: content` line per message, then the assistant's turn."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def parse(path: str, body: bytes, *, model: str, context: int) -> Request:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise ApiError("the request body must be a JSON object", code="invalid_json")
    asked = doc.get("model", model)
    if not isinstance(asked, str):
        raise ApiError("'model' must be a string", param="model", code="invalid_type")
    if asked != model:
        raise ApiError(f"The model '{asked}' does not exist; this server serves '{model}'", status=404,
                       param="model", code="model_not_found")
    chat = path == CHAT
    text = _messages(doc) if chat else _prompt(doc)
    prompt = text.encode("utf-8", "surrogatepass")
    if not prompt:
        raise ApiError("the prompt is empty", param="messages" if chat else "prompt", code="empty_prompt")
    max_tokens = _integer(doc, "max_completion_tokens" if chat and "max_completion_tokens" in doc else "max_tokens",
                          DEFAULT_MAX_TOKENS, minimum=1)
    if len(prompt) + max_tokens > context:
        raise ApiError(f"This model's maximum context length is {context} tokens. However, you requested "
                       f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the "
                       f"{'messages' if chat else 'prompt'}, {max_tokens} in the completion). Please reduce "
                       "the length of the prompt or of the completion.",
                       param="messages" if chat else "prompt", code="context_length_exceeded")
    temperature = doc.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise ApiError(f"'temperature' must be a number from 0 to 2, got {temperature!r}", param="temperature",
                       code="invalid_value")
    n = doc.get("n", 1)
    if n not in (None, 1) or isinstance(n, bool):
        raise ApiError(f"'n' must be 1 (one choice per request), got {n!r}", param="n", code="invalid_value")
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
        raise ApiError(f"'seed' must be a non-negative integer, got {seed!r}", param="seed", code="invalid_value")
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(f"'stream' must be true or false, got {stream!r}", param="stream", code="invalid_type")
    options = doc.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError("'stream_options' must be an object", param="stream_options", code="invalid_type")
    return Request(chat, model, prompt, max_tokens, float(temperature), seed, _stop(doc.get("stop")), stream,
                   bool(options.get("include_usage")))


def _prompt(doc: dict[str, Any]) -> str:
    prompt = doc.get("prompt")
    if prompt is None:
        raise ApiError("you must provide a 'prompt'", param="prompt", code="missing_required_parameter")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError("'prompt' must be a string (one prompt per request)", param="prompt", code="invalid_type")
    return prompt


def _messages(doc: dict[str, Any]) -> str:
    messages = doc.get("messages")
    if messages is None:
        raise ApiError("you must provide 'messages'", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise ApiError("'messages' must be a non-empty array", param="messages", code="invalid_type")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]",
                           code="invalid_type")
        content = m.get("content")
        if isinstance(content, list):  # content parts: the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise ApiError(f"messages[{i}].content must be a string", param=f"messages[{i}].content",
                           code="invalid_type")
        checked.append({"role": m["role"], "content": content})
    return chat_template(checked)


def _integer(doc: dict[str, Any], name: str, default: int, *, minimum: int) -> int:
    value = doc.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(f"'{name}' must be an integer of at least {minimum}, got {value!r}", param=name,
                       code="invalid_value")
    return value


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError("'stop' must be a non-empty string or up to 4 of them", param="stop", code="invalid_value")
    return tuple(stop)


class Answer:
    """The documents of one answer: streamed chunks or the whole completion, with its usage."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.id = ("chatcmpl-" if request.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if request.chat else "text_completion"

    def usage(self, completion_tokens: int) -> dict[str, int]:
        prompt = len(self.request.prompt)
        return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens}

    def _doc(self, choices: list[dict[str, Any]], obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.request.model, "choices": choices}

    def chunk(self, text: str, finish_reason: str | None = None, *, first: bool = False) -> bytes:
        if self.request.chat:
            delta: dict[str, str] = {"role": "assistant", "content": text} if first else {"content": text}
            choice: dict[str, Any] = {"index": 0, "delta": delta if text or first else {},
                                      "finish_reason": finish_reason}
            doc = self._doc([choice], "chat.completion.chunk")
        else:
            doc = self._doc([{"index": 0, "text": text, "finish_reason": finish_reason}], "text_completion")
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    def usage_chunk(self, completion_tokens: int) -> bytes:
        doc = self._doc([], "chat.completion.chunk" if self.request.chat else "text_completion")
        doc["usage"] = self.usage(completion_tokens)
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    DONE = b"data: [DONE]\n\n"

    def whole(self, text: str, finish_reason: str, completion_tokens: int) -> dict[str, Any]:
        if self.request.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish_reason}
        doc = self._doc([choice], self.object)
        doc["usage"] = self.usage(completion_tokens)
        return doc


def error_event(message: str) -> bytes:
    """An error after the stream began (its status line is already sent), as vLLM sends one."""
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                               "code": None}}) + b"\n\n"
