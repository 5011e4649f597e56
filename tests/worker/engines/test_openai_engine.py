"""The OpenAI engine against a small local chat-completions server (unit tests),
then against real servers from .venv-vllm on the trained tiny model (slow):
vLLM's OpenAI server and ``transformers serve``."""

import base64
import io
import json
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tests.worker.vllm_env import (
    MAX_NEW_TOKENS,
    TransformersServer,
    VLLMServer,
    check_detection,
    held_out,
    needs_vllm_venv,
)
from worker.engines.base import GenerationRequest, SamplingSettings
from worker.engines.openai_answer import StreamedAnswer, first_choice
from worker.engines.openai_engine import (
    OpenAIEngine,
    OpenAIEngineError,
    image_data_url,
)

GRAMMAR = (
    "<|object_ref_start|>cat<|object_ref_end|><|box_start|><1><2><3><4><|box_end|>"
)
TOKENS = [
    "<|object_ref_start|>",
    "cat",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<1>",
    "<2>",
    "<3>",
    "<4>",
    "<|box_end|>",
    "<|im_end|>",
]


LOOP_PREFIX = ["<|object_ref_start|>", "cat", "<|object_ref_end|>", "<|box_start|>"]
LOOP_ITEM = ["<1>", "<2>", "<3>", "<4>", ","]
"""A looping answer: the same box again and again until max_tokens."""
LOOP_CHUNK_DELAY_S = 0.002
"""Seconds between streamed tokens of a loop: the server notices a closed
connection within a token or two, as a real server does."""


def loop_tokens(max_tokens: int) -> list[str]:
    """The looping answer's tokens, cut at ``max_tokens`` as a server cuts it."""
    tokens = list(LOOP_PREFIX)
    while len(tokens) < max_tokens:
        tokens += LOOP_ITEM
    return tokens[:max_tokens]


class FakeChatServer:
    """Answers /v1/models and /v1/chat/completions like vLLM, streamed
    (server-sent events, chunked, one token per chunk) when asked, with switches:

    - ``reject``: optional fields answered with 422 naming them (as
      ``transformers serve`` does for skip_special_tokens);
    - ``reject_silently``: any optional field gives a 400 naming none;
    - ``no_logprobs``: ``logprobs: null`` in the answer;
    - ``plain``: ignore ``stream`` and answer JSON;
    - ``loop``: write the same box until ``max_tokens`` (finish ``length``);
    - ``fail_first``: that many 503 answers before answering;
    - ``delay_s``: seconds each completion takes.

    ``streamed`` counts the token chunks written per streamed answer, and
    ``disconnected`` the answers whose client closed the connection early.
    """

    def __init__(self):
        self.bodies: list[dict] = []
        self.reject: set[str] = set()
        self.reject_silently = False
        self.no_logprobs = False
        self.plain = False
        self.loop = False
        self.fail_first = 0
        self.delay_s = 0.0
        self.streamed: list[int] = []
        self.disconnected = 0
        self.stream_done = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.models = ["rex"]
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked event streams, keep-alive

            def log_message(self, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except ConnectionResetError:
                    pass  # a client closed a kept-alive connection with data unread

            def _json(self, status, data):
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._json(200, {"data": [{"id": m} for m in server.models]})
                return self._json(404, {"detail": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                status, data = server.answer(body)
                if status != 200 or not body.get("stream") or server.plain:
                    return self._json(status, data)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                try:
                    for event in server.events(body, data):
                        payload = f"data: {event}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                        self.wfile.flush()
                        sent += 1
                        if server.loop:
                            time.sleep(LOOP_CHUNK_DELAY_S)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnected += 1
                    self.close_connection = True
                finally:
                    server.streamed.append(sent)
                    server.stream_done.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}
        )

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body):
        with self._lock:
            self.bodies.append(body)
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503, {"error": "loading"}
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            rejected = sorted(name for name in self.reject if name in body)
            if rejected:
                return 422, {"detail": [{"loc": ["body", rejected[0]]}]}
            optional = {"skip_special_tokens", "logprobs", "top_k"}
            if self.reject_silently and optional & set(body):
                return 400, {"error": "invalid request"}
            keep = body.get("skip_special_tokens") is False
            tokens = loop_tokens(body["max_tokens"]) if self.loop else TOKENS
            if keep:
                content = "".join(tokens)
            else:
                content = "".join(t for t in tokens if not t.startswith("<|"))
            logprobs = None
            if body.get("logprobs") and not self.no_logprobs:
                logprobs = {
                    "content": [
                        {"token": t, "logprob": -0.1 * i, "bytes": None}
                        for i, t in enumerate(tokens)
                    ]
                }
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "length" if self.loop else "stop",
                "logprobs": logprobs,
            }
            if body.get("return_token_ids"):
                choice["token_ids"] = list(range(100, 100 + len(tokens)))
            usage = {"prompt_tokens": 42, "completion_tokens": len(tokens)}
            return 200, {"choices": [choice], "usage": usage}
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def events(body, data):
        """The answer ``data`` as vLLM streams it: a role chunk, one chunk per
        token (content, log-prob, id), then usage if asked, then [DONE]."""
        choice = data["choices"][0]
        entries = (choice["logprobs"] or {}).get("content")
        ids = choice.get("token_ids")
        count = data["usage"]["completion_tokens"]
        content = choice["message"]["content"]
        pieces = [e["token"] for e in entries or []]
        if "".join(pieces) != content:  # content in two uneven pieces
            pieces = [content[:3], content[3:]] + [""] * (count - 2)
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}}
        yield json.dumps({"choices": [first]})
        for i, piece in enumerate(pieces):
            out = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            out["logprobs"] = {"content": [entries[i]]} if entries else None
            if ids:
                out["token_ids"] = [ids[i]]
            if i == len(pieces) - 1:
                out["finish_reason"] = choice["finish_reason"]
            yield json.dumps({"choices": [out]})
        if (body.get("stream_options") or {}).get("include_usage"):
            yield json.dumps({"choices": [], "usage": data["usage"]})
        yield "[DONE]"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    with FakeChatServer() as fake:
        yield fake


def _request(size=(64, 48), prompt="Detect cat.", **sampling):
    image = Image.new("RGB", size, (10, 200, 30))
    return GenerationRequest(image, prompt, SamplingSettings(**sampling))


def _engine(server, **kwargs):
    return OpenAIEngine("rex", base_url=server.url, api_key="k", **kwargs)


def test_sends_upstream_settings_and_the_image_inline(server):
    engine = _engine(server)
    engine.generate([_request(max_new_tokens=77)])
    body = server.bodies[-1]
    assert body["model"] == "rex"
    assert body["max_tokens"] == 77
    assert body["temperature"] == 0.0 and body["top_p"] == 0.8
    assert body["top_k"] == 1 and body["repetition_penalty"] == 1.05
    assert body["skip_special_tokens"] is False
    assert body["spaces_between_special_tokens"] is False
    assert body["logprobs"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are a helpful assistant"}
    image_part, text_part = user["content"]
    assert text_part == {"type": "text", "text": "Detect cat."}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    # 64x48 is below min_pixels: smart_resize scales it up to 140x112.
    assert sent.size == (140, 112)


def test_result_maps_text_tokens_logprobs_and_usage(server):
    (result,) = _engine(server).generate([_request()])
    assert result.text == GRAMMAR
    assert result.token_texts == TOKENS
    assert "".join(result.token_texts) == result.text + "<|im_end|>"
    assert result.token_logprobs == pytest.approx([-0.1 * i for i in range(10)])
    assert result.token_ids == list(range(100, 110))
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.output_tokens) == (42, 10)
    assert result.timings["request"] > 0


def test_a_rejected_skip_special_tokens_is_dropped_and_remembered(server, caplog):
    server.reject = {"skip_special_tokens"}
    engine = _engine(server)
    with caplog.at_level("WARNING"):
        (first,) = engine.generate([_request()])
    assert "skip_special_tokens" in caplog.text and "grammar tokens" in caplog.text
    assert engine.unsupported == {"skip_special_tokens"}
    assert first.text == "cat<1><2><3><4>"  # what such a server gives
    count = len(server.bodies)
    engine.generate([_request()])
    assert len(server.bodies) == count + 1  # no second 422 round trip
    assert "skip_special_tokens" not in server.bodies[-1]


SERVER_SECRET = "upstream /srv/models/secret failed at http://10.9.8.7:8000/x"
"""What a model server's error may say about its insides."""


@pytest.mark.parametrize(
    "fail",
    [
        lambda: first_choice({"detail": SERVER_SECRET}, "http://m/v1"),
        lambda: StreamedAnswer(8, 8, "http://m/v1").add({"error": SERVER_SECRET}),
        lambda: StreamedAnswer(8, 8, "http://m/v1").add([SERVER_SECRET]),
    ],
    ids=["no choice", "error chunk", "chunk no object"],
)
def test_what_a_failing_server_sent_goes_to_the_log_only(fail, caplog):
    with pytest.raises(OpenAIEngineError) as exc:
        fail()
    assert "secret" not in str(exc.value) and "10.9.8.7" not in str(exc.value)
    assert str(exc.value).startswith("http://m/v1 ")  # which server, and what
    assert SERVER_SECRET in caplog.text


def test_a_400_naming_no_field_is_an_error_and_changes_nothing(server, caplog):
    server.reject_silently = True
    engine = _engine(server)
    with pytest.raises(OpenAIEngineError, match=r"HTTP 400 \(Bad Request\)") as exc:
        engine.generate([_request()])
    # the server's body may name its files and hosts: the log has it, the
    # message (which reaches a client) does not
    assert "invalid request" not in str(exc.value)
    assert "invalid request" in caplog.text
    assert engine.unsupported == set()
    assert len(server.bodies) == 1


def test_null_logprobs_give_none(server):
    server.no_logprobs = True
    (result,) = _engine(server).generate([_request()])
    assert result.token_logprobs is None
    assert result.text == GRAMMAR
    assert "".join(result.token_texts).startswith(result.text)


def test_transient_errors_are_retried(server, monkeypatch):
    monkeypatch.setattr("worker.engines.openai_engine.RETRY_BACKOFF_S", 0.01)
    server.fail_first = 2
    (result,) = _engine(server).generate([_request()])
    assert result.text == GRAMMAR
    assert len(server.bodies) == 3


def test_persistent_errors_name_the_server(server, monkeypatch):
    monkeypatch.setattr("worker.engines.openai_engine.RETRY_BACKOFF_S", 0.01)
    server.fail_first = 10
    with pytest.raises(OpenAIEngineError, match="HTTP 503"):
        _engine(server).generate([_request()])


def test_requests_run_concurrently_up_to_the_bound(server):
    server.delay_s = 0.2
    engine = _engine(server, concurrency=3)
    started = time.perf_counter()
    results = engine.generate([_request(prompt=f"Detect {i}.") for i in range(6)])
    elapsed = time.perf_counter() - started
    assert len(results) == 6
    assert server.max_in_flight == 3
    assert elapsed < 6 * 0.2  # not one after another
    prompts = [b["messages"][1]["content"][1]["text"] for b in server.bodies]
    assert sorted(prompts) == [f"Detect {i}." for i in range(6)]


def test_results_keep_request_order(server):
    engine = _engine(server, concurrency=4)
    results = engine.generate([_request(max_new_tokens=n) for n in (5, 6, 7)])
    assert len(results) == 3 and all(r.text == GRAMMAR for r in results)


@pytest.mark.parametrize(
    "switches",
    [{}, {"no_logprobs": True}, {"reject": {"skip_special_tokens"}}],
    ids=["logprobs", "no-logprobs", "no-special-tokens"],
)
def test_a_streamed_answer_gives_the_plain_answers_result(server, switches):
    for name, value in switches.items():
        setattr(server, name, value)
    streamed = _engine(server).generate([_request()])
    assert len(server.streamed) == 1  # it was streamed
    server.plain = True
    plain = _engine(server).generate([_request()])
    assert len(server.streamed) == 1
    for result in (*streamed, *plain):
        result.timings = {}
    assert streamed == plain
    assert streamed[0].finish_reason == "stop"


def test_a_server_rejecting_stream_is_asked_plainly(server):
    server.reject = {"stream"}
    engine = _engine(server)
    (result,) = engine.generate([_request()])
    assert engine.unsupported == {"stream"}
    assert result.text == GRAMMAR and result.token_texts == TOKENS
    assert server.streamed == []
    assert "stream_options" in server.bodies[-1]  # named whole, not by prefix


def test_a_server_rejecting_stream_options_still_streams(server):
    server.reject = {"stream_options"}
    engine = _engine(server)
    (result,) = engine.generate([_request()])
    assert engine.unsupported == {"stream_options"}
    assert server.streamed == [len(TOKENS) + 2]  # role chunk, tokens, [DONE]
    # No usage chunk: the counts come from the tokens.
    assert (result.prompt_tokens, result.output_tokens) == (0, len(TOKENS))


LOOP_CUT = [*LOOP_PREFIX, *LOOP_ITEM * 3]
"""The looping answer up to the third identical box's separator."""


@pytest.mark.parametrize(
    ("no_logprobs", "limits", "kept"),
    [
        (False, {"max_repeats": 3}, LOOP_CUT),
        (True, {"max_repeats": 3}, LOOP_CUT),
        (False, {"max_repeats": 5, "max_instances": 2}, LOOP_CUT[:-5]),
    ],
    ids=["repeats", "repeats-no-logprobs", "instances"],
)
def test_a_looping_stream_is_cut_and_its_connection_closed(
    server, no_logprobs, limits, kept
):
    server.loop, server.no_logprobs = True, no_logprobs
    max_tokens = 4096
    started = time.perf_counter()
    (result,) = _engine(server).generate(
        [_request(max_new_tokens=max_tokens, **limits)]
    )
    elapsed = time.perf_counter() - started
    assert result.finish_reason == "runaway" and result.truncated
    assert result.text == "".join(kept)
    if no_logprobs:
        assert result.token_texts == [result.text] and result.token_logprobs is None
    else:
        assert result.token_texts == kept
        assert result.token_ids == list(range(100, 100 + len(kept)))
        assert len(result.token_logprobs) == result.output_tokens == len(kept)
    assert result.prompt_tokens == 0  # the usage chunk never came
    # The server saw the client leave a few tokens later, not at max_tokens.
    assert server.stream_done.wait(timeout=10)
    assert server.disconnected == 1
    assert server.streamed[0] < len(kept) + 50
    assert elapsed < max_tokens * LOOP_CHUNK_DELAY_S


def test_a_plain_looping_answer_is_cut(server):
    server.loop, server.plain = True, True
    (result,) = _engine(server).generate([_request(max_new_tokens=200)])
    assert result.finish_reason == "runaway"
    assert result.text == "".join(LOOP_CUT) and result.token_texts == LOOP_CUT
    assert result.output_tokens == len(LOOP_CUT)
    assert result.prompt_tokens == 42


def test_an_error_event_is_an_error(server, monkeypatch, caplog):
    def events(body, data):
        yield json.dumps({"error": {"message": "engine died"}})

    monkeypatch.setattr(server, "events", events)
    with pytest.raises(OpenAIEngineError, match=r"failed while streaming"):
        _engine(server).generate([_request()])
    assert "engine died" in caplog.text  # the server's words: the log only


def test_an_unserved_model_is_named(server):
    with pytest.raises(OpenAIEngineError, match=r"'other'.*serves 'rex'"):
        OpenAIEngine("other", base_url=server.url)


def test_an_unreachable_server_is_named():
    with pytest.raises(OpenAIEngineError, match="cannot reach"):
        OpenAIEngine("rex", base_url="http://127.0.0.1:9/v1")


def test_missing_url_names_the_setting(monkeypatch):
    monkeypatch.delenv("REXLABEL_OPENAI_URL", raising=False)
    with pytest.raises(OpenAIEngineError, match="REXLABEL_OPENAI_URL"):
        OpenAIEngine("rex")


def test_registry_builds_it_from_settings(server, monkeypatch):
    from worker.engines.registry import create_engine

    monkeypatch.setenv("REXLABEL_OPENAI_URL", server.url)
    monkeypatch.setenv("REXLABEL_OPENAI_CONCURRENCY", "2")
    engine = create_engine("openai", model="rex")
    assert engine.name == "openai" and engine.concurrency == 2
    assert engine.generate([_request()])[0].text == GRAMMAR


def test_png_data_url_is_lossless():
    image = Image.effect_noise((30, 20), 40).convert("RGB")
    url = image_data_url(image, "PNG")
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.tobytes() == image.tobytes()


# Real servers on the trained tiny model (slow; .venv-vllm) -------------------------


def _detection_requests(samples):
    from converters.prompts import build_prompt
    from converters.tasks import Task

    return [
        GenerationRequest(
            s.image,
            build_prompt(Task.DETECTION, [s.phrase]),
            SamplingSettings(max_new_tokens=MAX_NEW_TOKENS),
        )
        for s in samples
    ]


@pytest.mark.slow
@needs_vllm_venv
def test_against_a_real_vllm_server(
    trained_model_dir, trained_engine, tmp_path, capsys
):
    samples = held_out()
    requests_ = _detection_requests(samples)
    with VLLMServer(trained_model_dir, tmp_path / "vllm-server.log") as server:
        # PNG: lossless, so the server sees the pixels the transformers engine sees.
        engine = OpenAIEngine(
            "tiny", base_url=server.url, api_key="EMPTY", image_format="PNG"
        )
        started = time.perf_counter()
        first = engine.generate(requests_[:1])
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        results = engine.generate(requests_)
        batch_s = time.perf_counter() - started
        # One item allowed: the guard triggers at the box's <|box_end|>.
        capped = engine.generate(
            [
                GenerationRequest(
                    r.image,
                    r.prompt,
                    SamplingSettings(max_new_tokens=MAX_NEW_TOKENS, max_instances=1),
                )
                for r in requests_[:1]
            ]
        )
        engine.close()
    assert engine.unsupported == set()  # vLLM takes every field we send
    (cut,) = capped
    assert cut.finish_reason == "runaway"
    assert cut.token_texts[-1] == "<|box_end|>" and cut.text == results[0].text
    assert cut.token_ids == results[0].token_ids[:-1]  # all but <|im_end|>
    assert cut.output_tokens == len(cut.token_ids)
    references = trained_engine.generate(requests_)
    for result, sample, reference in zip(results, samples, references, strict=True):
        check_detection(asdict(result), sample)
        assert result.text == reference.text
        assert result.token_ids == reference.token_ids
        assert result.token_logprobs == pytest.approx(
            reference.token_logprobs, abs=0.05
        )
        assert result.output_tokens == len(result.token_ids)
        assert result.prompt_tokens > 16  # the image's tokens are counted
    assert first[0].text == results[0].text  # greedy: the same answer again
    with capsys.disabled():
        print(
            f"\nvLLM server: ready in {server.startup_s:.1f} s, first request "
            f"{first_s:.2f} s, {len(samples)} concurrent requests {batch_s:.2f} s"
        )


@pytest.mark.slow
@needs_vllm_venv
def test_against_transformers_serve(
    trained_model_dir, trained_engine, tmp_path, capsys
):
    """A server that rejects our extra fields (422) and returns no log-probs."""
    samples = held_out()
    requests_ = _detection_requests(samples)
    with TransformersServer(trained_model_dir, tmp_path / "serve.log") as server:
        engine = OpenAIEngine(
            str(trained_model_dir), base_url=server.url, image_format="PNG"
        )
        started = time.perf_counter()
        results = engine.generate(requests_)
        batch_s = time.perf_counter() - started
        engine.close()
    assert {"skip_special_tokens", "repetition_penalty"} <= engine.unsupported
    # Without repetition_penalty the server decodes plain greedy.
    plain = [
        GenerationRequest(
            r.image,
            r.prompt,
            SamplingSettings(max_new_tokens=MAX_NEW_TOKENS, repetition_penalty=1.0),
        )
        for r in requests_
    ]
    references = trained_engine.generate(plain)
    for result, sample, reference in zip(results, samples, references, strict=True):
        assert result.token_logprobs is None
        check_detection(asdict(result), sample, logprobs=False)
        assert result.text == reference.text
    with capsys.disabled():
        print(
            f"\ntransformers serve: ready in {server.startup_s:.1f} s, "
            f"{len(samples)} requests {batch_s:.2f} s"
        )


def test_a_refused_logprobs_count_drops_the_alternatives_only():
    """vLLM below --max-logprobs names only ``logprobs``: dropping it lost every
    score; the alternatives go, the chosen tokens' log-probabilities stay."""
    body = {"logprobs": True, "top_logprobs": 20, "stream": True}
    message = (
        "Requested sample logprobs of 21, which is greater than max allowed: 20 "
        "(parameter=logprobs, value=21)"
    )
    assert OpenAIEngine._rejected_params(body, message) == {"top_logprobs"}
    plain = {"logprobs": True, "stream": True}
    assert OpenAIEngine._rejected_params(plain, "logprobs unsupported") == {"logprobs"}
