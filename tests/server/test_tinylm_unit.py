"""tinylm and its serving strategies, in process: the KV cache against full recomputation, the
continuous batcher's join/leave/move bookkeeping against a model that checks every row it is
handed, refusals, stop strings and the OpenAI request checks."""
from __future__ import annotations

import threading
import time

import orjson
import pytest
import torch

from target_server.batching import Overloaded
from target_server.generative import openai_api
from target_server.generative.engine import ContinuousBatcher, Generation, SoloGeneration
from target_server.generative.openai_api import CHAT, COMPLETIONS, ApiError
from target_server.generative.service import StopScanner
from target_server.generative.tinylm import OUTPUT_BYTES, VOCAB, CachedModel, Size, TinyLM, output_text

SMALL = Size(d_model=32, layers=2, heads=2, context=96)


@pytest.fixture(scope="module")
def small() -> TinyLM:
    return TinyLM(SMALL).seed_weights().eval()


def full_logits(module: TinyLM, tokens: list[int]) -> torch.Tensor:
    """The last position's logits computed from scratch (a fresh cache, the whole sequence at once)."""
    with torch.inference_mode():
        return CachedModel(module, 1).prefill(0, torch.tensor(tokens), 0)


# --- the model and its cache ----------------------------------------------------------------------


def test_decode_with_the_cache_matches_recomputing_the_whole_sequence(small):
    seqs = [list(b"hello there"), list(b"a much longer prompt of forty bytes....")]
    model = CachedModel(small, 2)
    with torch.inference_mode():
        for row, seq in enumerate(seqs):
            model.prefill(row, torch.tensor(seq), 0)
        for step in range(5):  # two rows of different lengths advanced together
            new = [ord("a") + step, ord("k") + step]
            logits = model.decode(torch.tensor(new), torch.tensor([len(s) for s in seqs]))
            for row, token in enumerate(new):
                seqs[row].append(token)
                torch.testing.assert_close(logits[row], full_logits(small, seqs[row]), rtol=1e-4, atol=1e-4)


def test_chunked_prefill_equals_one_prefill_and_a_moved_row_decodes_the_same(small):
    prompt = list(b"chunk me into pieces of seven bytes each, please")
    model = CachedModel(small, 3)
    with torch.inference_mode():
        for start in range(0, len(prompt), 7):
            chunked = model.prefill(2, torch.tensor(prompt[start:start + 7]), start)
        torch.testing.assert_close(chunked, full_logits(small, prompt), rtol=1e-4, atol=1e-4)
        model.move(2, 0, len(prompt))
        moved = model.decode(torch.tensor([ord("x")]), torch.tensor([len(prompt)]))[0]
    torch.testing.assert_close(moved, full_logits(small, [*prompt, ord("x")]), rtol=1e-4, atol=1e-4)


def test_only_newline_and_printable_ascii_can_be_produced(small):
    logits = full_logits(small, list(b"any prompt at all"))
    allowed = torch.isfinite(logits).nonzero().flatten().tolist()
    assert allowed == sorted(OUTPUT_BYTES) and len(logits) == VOCAB
    assert all(len(output_text(t)) == 1 for t in allowed)


def test_seeded_weights_are_deterministic_and_leave_the_global_rng_alone():
    a, b = TinyLM(SMALL), TinyLM(SMALL)  # construction draws default weights from the global RNG
    torch.manual_seed(1)
    expected = torch.rand(1)
    torch.manual_seed(1)
    a.seed_weights(), b.seed_weights()
    assert torch.rand(1) == expected
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.head.weight, TinyLM(SMALL).seed_weights(seed=7).head.weight)


# --- the continuous batcher's bookkeeping ---------------------------------------------------------


class CheckingModel:
    """A stand-in that keeps each cache row's tokens and checks every call against them: a decode
    of row i must be at position len(row i), a prefill must continue its row. Its next token is a
    function of the row's whole history, so a stream fed another row's cache produces other text."""

    def __init__(self, slots: int, step_s: float = 0.002) -> None:
        self.rows: list[list[int]] = [[] for _ in range(slots)]
        self.step_s = step_s  # a decode step takes time, so streams overlap as they do for real
        self.batches: list[int] = []
        self.moves: list[tuple[int, int]] = []
        self.errors: list[str] = []

    @staticmethod
    def next_token(history: list[int]) -> int:
        return OUTPUT_BYTES[(sum(history) * 31 + len(history)) % len(OUTPUT_BYTES)]

    def logits(self, history: list[int]) -> torch.Tensor:
        out = torch.full((VOCAB,), -1e9)
        out[self.next_token(history)] = 0.0
        return out

    def prefill(self, row: int, tokens: torch.Tensor, start: int) -> torch.Tensor:
        if start == 0:
            self.rows[row] = []
        if len(self.rows[row]) != start:
            self.errors.append(f"prefill of row {row} at {start}, but it holds {len(self.rows[row])}")
        self.rows[row] = self.rows[row][:start] + tokens.tolist()
        return self.logits(self.rows[row])

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        time.sleep(self.step_s)
        self.batches.append(len(tokens))
        out = []
        for row, (token, length) in enumerate(zip(tokens.tolist(), lengths.tolist())):
            if len(self.rows[row]) != length:
                self.errors.append(f"decode of row {row} at {length}, but it holds {len(self.rows[row])}")
            self.rows[row] = self.rows[row][:length] + [token]
            out.append(self.logits(self.rows[row]))
        return torch.stack(out)

    def move(self, source: int, target: int, length: int) -> None:
        self.moves.append((source, target))
        self.rows[target] = self.rows[source][:length]


def reference(prompt: list[int], max_tokens: int) -> list[int]:
    history, out = list(prompt), []
    for _ in range(max_tokens):
        token = CheckingModel.next_token(history)
        out.append(token)
        history.append(token)
    return out


def batcher(model, **kw) -> ContinuousBatcher:
    settings = {"max_batch": 4, "prefill_chunk": 5, "queue_limit": 16, "timeout_s": 10.0, **kw}
    return ContinuousBatcher(model, **settings)


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_streams_that_join_and_leave_get_exactly_their_own_tokens():
    """Eight streams of different lengths through four rows: some wait, some are cut short after a
    few tokens (their rows are filled by moves), and every finished one gets its own text."""
    model = CheckingModel(slots=4)
    engine = batcher(model, prefill_chunk=16)
    prompts = [list(f"prompt number {i} ".encode()) * (1 + i % 3) for i in range(8)]
    lengths = [15, 100, 1, 60, 150, 35, 80, 125]
    cut = {1: 20, 4: 10, 6: 45}  # stream -> tokens taken before its client goes away
    results: dict[int, list[int]] = {}
    active_changes: list[int] = []
    engine.on_active = active_changes.append

    def client(i: int) -> None:
        tokens = engine.stream(Generation(prompts[i], lengths[i], temperature=0.0))
        got = []
        for token in tokens:
            got.append(token)
            if len(got) == cut.get(i):
                tokens.close()
                break
        results[i] = got

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert wait_until(lambda: engine.active == 0)
    finally:
        engine.close()
    assert model.errors == []
    for i in range(8):
        want = reference(prompts[i], lengths[i])
        assert results[i] == want[:cut.get(i, lengths[i])], f"stream {i}"
    assert max(model.batches) == 4 and sum(active_changes) == 0
    assert model.moves, "cut streams left holes that a move should have filled"


def test_real_model_gives_each_stream_the_text_it_gets_alone(small):
    """The same check with tinylm itself: greedy text of each stream, batched with others that
    come and go, equals its text generated alone (one-stream strategy)."""
    solo = SoloGeneration(lambda slots: CachedModel(small, slots), prefill_chunk=8, locked=False, timeout_s=5)
    prompts = [list(f"stream {i}: ".encode()) * (i + 1) for i in range(5)]
    alone = [list(solo.stream(Generation(p, 12 + 3 * i, temperature=0.0))) for i, p in enumerate(prompts)]
    engine = ContinuousBatcher(CachedModel(small, 3), max_batch=3, prefill_chunk=8, queue_limit=8, timeout_s=10)
    results: dict[int, list[int]] = {}

    def client(i: int) -> None:
        results[i] = list(engine.stream(Generation(prompts[i], 12 + 3 * i, temperature=0.0)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(5)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        engine.close()
    assert [results[i] for i in range(5)] == alone


def test_a_seeded_stream_draws_the_same_text_whatever_shares_its_batch(small):
    engine = ContinuousBatcher(CachedModel(small, 4), max_batch=4, prefill_chunk=16, queue_limit=8, timeout_s=10)
    try:
        first = list(engine.stream(Generation(list(b"seeded"), 20, temperature=1.0, seed=42)))
        crowd = [engine.stream(Generation(list(b"others"), 30, temperature=1.0)) for _ in range(2)]
        heads = [next(c) for c in crowd]  # two others decoding when the seeded one joins
        again = list(engine.stream(Generation(list(b"seeded"), 20, temperature=1.0, seed=42)))
        for c in crowd:
            c.close()
    finally:
        engine.close()
    assert again == first and len(first) == 20 and len(heads) == 2
    assert list(ContinuousBatcher(CachedModel(small, 1), max_batch=2, prefill_chunk=4, queue_limit=1,
                                  timeout_s=5).stream(Generation(list(b"seeded"), 20, 1.0, seed=43))) != first


def test_a_client_that_goes_away_frees_its_row_at_the_next_step():
    model = CheckingModel(slots=2, step_s=0.01)
    engine = batcher(model, max_batch=2)
    try:
        keep = engine.stream(Generation(list(b"keeps going"), 400, temperature=0.0))
        leave = engine.stream(Generation(list(b"leaves early"), 400, temperature=0.0))
        next(keep), next(leave)
        assert wait_until(lambda: engine.active == 2)
        leave.close()
        assert wait_until(lambda: engine.active == 1)
        next(keep)  # the other stream goes on
        keep.close()
        assert wait_until(lambda: engine.active == 0)
    finally:
        engine.close()
    assert model.errors == []


def test_a_full_queue_is_refused_at_once_and_a_long_wait_is_refused_after_the_timeout():
    engine = batcher(CheckingModel(slots=1, step_s=0.05), max_batch=1, queue_limit=2, timeout_s=0.3)
    try:
        running = engine.stream(Generation(list(b"holds the only row"), 100, temperature=0.0))
        next(running)  # prefilled; it holds the only row for 100 slow steps
        waiting = [engine.stream(Generation(list(b"waits"), 5, temperature=0.0)) for _ in range(2)]
        # a stream is submitted at its first next(): two consumers fill the queue, a third is refused
        errors: list[BaseException] = []

        def consume(stream) -> None:
            try:
                list(stream)
            except Overloaded as exc:
                errors.append(exc)

        threads = [threading.Thread(target=consume, args=(w,)) for w in waiting]
        for t in threads:
            t.start()
        assert wait_until(lambda: engine.waiting == 2)
        with pytest.raises(Overloaded, match="queue_limit"):
            next(engine.stream(Generation(list(b"one too many"), 5, temperature=0.0)))
        for t in threads:
            t.join(timeout=5)
        assert len(errors) == 2 and all("request_timeout_s" in str(e) for e in errors)
        running.close()
    finally:
        engine.close()


def test_max_tokens_is_exact_and_one_token_needs_no_decode_step():
    model = CheckingModel(slots=2)
    engine = batcher(model)
    try:
        assert len(list(engine.stream(Generation(list(b"p"), 1, temperature=0.0)))) == 1
        assert model.batches == []
        assert len(list(engine.stream(Generation(list(b"p"), 37, temperature=0.0)))) == 37
        assert wait_until(lambda: engine.active == 0)
    finally:
        engine.close()


def test_the_global_lock_lets_one_generation_run_at_a_time_and_refuses_a_long_wait(small):
    make = lambda slots: CachedModel(small, slots)  # noqa: E731
    locked = SoloGeneration(make, prefill_chunk=4, locked=True, timeout_s=0.3)
    g = lambda: Generation(list(b"the tutorial's lock"), 15, temperature=0.0)  # noqa: E731
    first = locked.stream(g())
    head = [next(first)]  # holds the lock until it is done or closed
    with pytest.raises(Overloaded, match="request_timeout_s"):
        next(locked.stream(g()))
    head += list(first)
    free = SoloGeneration(make, prefill_chunk=64, locked=False, timeout_s=0.3)
    assert list(locked.stream(g())) == head == list(free.stream(g())) and locked.active == 0
    cut = locked.stream(g())
    next(cut)
    cut.close()  # a client that goes away releases the lock
    assert len(list(locked.stream(g()))) == 15


# --- stop strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces,stops,shown,stopped", [
    (list("hello world"), ("wor",), "hello ", True),
    (list("abcabd"), ("abd",), "abc", True),
    (list("no stop here"), ("zz",), "no stop here", False),
    (["a", "b\nc"], ("\n",), "ab", True),
    (list("plain"), (), "plain", False),
])
def test_stop_scanner_never_shows_a_stop_string_or_text_after_it(pieces, stops, shown, stopped):
    scanner = StopScanner(stops)
    out = ""
    for piece in pieces:
        out += scanner.feed(piece)
        if scanner.stopped:
            break
    else:
        out += scanner.flush()
    assert (out, scanner.stopped) == (shown, stopped)


# --- the OpenAI request checks --------------------------------------------------------------------

HOSTILE = [
    (CHAT, b"{not json", 400, None, "invalid_json"),
    (CHAT, b"[1, 2]", 400, None, "invalid_json"),
    (CHAT, b'{"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}', 404, "model", "model_not_found"),
    (CHAT, b'{"model": 3, "messages": []}', 400, "model", "invalid_type"),
    (CHAT, b'{"model": "tinylm"}', 400, "messages", "missing_required_parameter"),
    (CHAT, b'{"messages": []}', 400, "messages", "invalid_type"),
    (CHAT, b'{"messages": ["hi"]}', 400, "messages[0]", "invalid_type"),
    (CHAT, b'{"messages": [{"role": "user", "content": 5}]}', 400, "messages[0].content", "invalid_type"),
    (COMPLETIONS, b'{"model": "tinylm"}', 400, "prompt", "missing_required_parameter"),
    (COMPLETIONS, b'{"prompt": ""}', 400, "prompt", "empty_prompt"),
    (COMPLETIONS, b'{"prompt": ["a", "b"]}', 400, "prompt", "invalid_type"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 0}', 400, "max_tokens", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": -5}', 400, "max_tokens", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": "10"}', 400, "max_tokens", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": true}', 400, "max_tokens", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 95}', 400, "prompt", "context_length_exceeded"),
    (COMPLETIONS, b'{"prompt": "hi", "temperature": 3}', 400, "temperature", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "temperature": "hot"}', 400, "temperature", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "n": 2}', 400, "n", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "seed": -1}', 400, "seed", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "stream": "yes"}', 400, "stream", "invalid_type"),
    (COMPLETIONS, b'{"prompt": "hi", "stream_options": 1}', 400, "stream_options", "invalid_type"),
    (COMPLETIONS, b'{"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}', 400, "stop", "invalid_value"),
    (COMPLETIONS, b'{"prompt": "hi", "stop": [""]}', 400, "stop", "invalid_value"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}', 400,
     "max_completion_tokens", "invalid_value"),
]


@pytest.mark.parametrize("path,body,status,param,code", HOSTILE)
def test_bad_requests_are_refused_as_openai_refuses_them(path, body, status, param, code):
    with pytest.raises(ApiError) as caught:
        openai_api.parse(path, body, model="tinylm", context=SMALL.context)
    error = caught.value
    assert (error.status, error.param, error.code) == (status, param, code)
    doc = error.document()["error"]
    assert set(doc) == {"message", "type", "param", "code"} and doc["message"]
    assert doc["type"] == "invalid_request_error"


def test_a_good_chat_request_is_read_with_its_defaults_and_template():
    body = orjson.dumps({"model": "tinylm", "messages": [{"role": "system", "content": "be brief"},
                                                          {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                         "stream": True, "stream_options": {"include_usage": True}, "stop": "\n",
                         "top_p": 0.9})
    request = openai_api.parse(CHAT, body, model="tinylm", context=SMALL.context)
    assert request.prompt == b"system: be brief\nuser: hi\nassistant: "
    assert (request.max_tokens, request.temperature, request.stop) == (openai_api.DEFAULT_MAX_TOKENS, 1.0, ("\n",))
    assert request.stream and request.include_usage and request.chat
    exact = openai_api.parse(COMPLETIONS, b'{"prompt": "hi", "max_tokens": 94}', model="tinylm",
                             context=SMALL.context)
    assert len(exact.prompt) + exact.max_tokens == SMALL.context  # the limit itself is allowed
