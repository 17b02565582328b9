"""Request bodies for generative APIs (`target.api`): OpenAI chat or completions, synthetic or from a dataset.

Synthetic prompts are seeded sequences of common English words. Each word is a single token in
the GPT (cl100k, o200k) and Llama BPE vocabularies when preceded by a space, so a prompt of N
words is about N tokens to such servers without downloading a tokenizer; servers with other
vocabularies (a byte-level model counts characters) see a different number, which is why the
input length the figures use is the server's own `usage.prompt_tokens` when it sends one.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import orjson

from harness.scenario.schema import Prompts, Target, TokenCount


class Api(NamedTuple):
    """What shapes a generative request: the api, streamed or not, the model (plain data, so it
    travels to generator processes and into the Locust plan file)."""

    api: str  # openai-chat | openai-completions
    streamed: bool
    model: str


def api_of(target: Target, model: str) -> Api | None:
    return Api(target.api, target.streamed, model) if target.api is not None else None

WORDS = ("the of and to in is was for on that with as by at from his it an were are which this be has "
         "or had not first one their its new after but who they have her she two been other when there all "
         "during into school time may years more most only over city some world would where later up such "
         "used many can state about national out known university united then made").split()


def lengths(spec: TokenCount, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` lengths drawn from the spec's normal distribution, rounded and clipped to [min, max]."""
    drawn = rng.normal(spec.mean, spec.stddev, size=count) if spec.stddev > 0 else np.full(count, spec.mean)
    upper = spec.max if spec.max is not None else np.inf
    return np.clip(np.rint(drawn), spec.min, upper).astype(np.int64)


def prompt_text(words: int, rng: np.random.Generator) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=words))


def request_body(api: Api, *, prompt: str | None = None, messages: list[Any] | None = None,
                 max_tokens: int | None = None, exact: bool = False, extra: dict[str, Any] | None = None,
                 model: str | None = None) -> bytes:
    """One OpenAI-style body: the prompt (completions) or messages (chat), model and streaming."""
    doc: dict[str, Any] = {"model": model or api.model}
    if api.api == "openai-chat":
        doc["messages"] = messages if messages is not None else [{"role": "user", "content": prompt or ""}]
    else:
        doc["prompt"] = prompt if prompt is not None else _joined(messages or [])
    if max_tokens is not None:
        doc["max_tokens"] = int(max_tokens)
        if exact:
            doc["min_tokens"] = int(max_tokens)
            doc["ignore_eos"] = True
    if extra:
        doc.update(extra)
    doc["stream"] = api.streamed
    if api.streamed:
        doc["stream_options"] = {"include_usage": True}
    return orjson.dumps(doc)


def _joined(messages: list[Any]) -> str:
    return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in messages)


def synthetic_bodies(target: Target, model: str) -> list[bytes]:
    """The prompt variants a run cycles through (target.prompts, or its defaults)."""
    api = api_of(target, model)
    assert api is not None
    spec = target.prompts or Prompts()
    rng = np.random.default_rng(spec.seed)
    inputs = lengths(spec.input_tokens, spec.variants, rng)
    outputs = lengths(spec.output_tokens, spec.variants, rng)
    return [request_body(api, prompt=prompt_text(int(n), rng), max_tokens=int(m), exact=spec.exact_output)
            for n, m in zip(inputs, outputs)]


def dataset_body(api: Api, body: bytes) -> bytes:
    """A dataset line as a generative request: a JSON string is the prompt; an object with `prompt`
    or `messages` is completed with the model and streaming settings it lacks; anything else is
    sent as written."""
    doc = orjson.loads(body)
    if isinstance(doc, str):
        return request_body(api, prompt=doc, messages=[{"role": "user", "content": doc}]
                            if api.api == "openai-chat" else None)
    if isinstance(doc, dict) and ("prompt" in doc or "messages" in doc):
        rest = {k: v for k, v in doc.items() if k not in ("prompt", "messages", "model", "stream", "stream_options")}
        prompt, messages = doc.get("prompt"), doc.get("messages")
        if api.api == "openai-chat" and messages is None:
            messages = [{"role": "user", "content": prompt}]
        return request_body(api, prompt=prompt if isinstance(prompt, str) else None,
                            messages=messages if isinstance(messages, list) else None, extra=rest,
                            model=str(doc.get("model") or api.model))
    return body
