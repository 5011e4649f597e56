"""The OpenAI engine: Rex-Omni served by any OpenAI-compatible chat server.

For example ``vllm serve IDEA-Research/Rex-Omni --tokenizer-mode slow`` (or
``auto`` on vLLM versions without the slow mode), SGLang, or ``transformers
serve``. Workers become thin HTTP clients and the server batches and scales.

Each request sends the image inline (a base64 data URL, pre-resized with
smart_resize as upstream's vLLM path does) and asks for the raw grammar:
``skip_special_tokens: false`` (else the ``<|box_start|>``... tokens are lost,
upstream issue 12), ``spaces_between_special_tokens: false`` (no spaces
around them, issue 122) and ``logprobs: true``. Servers that reject one of
these extra fields (``transformers serve`` answers 422 to
``skip_special_tokens``) are asked again without it, and the engine remembers.
Log-probabilities are optional: a server that returns none gives
``token_logprobs=None`` and the whole content as the one ``token_texts``
entry; ``token_ids`` are filled where the server returns them (vLLM's
``return_token_ids``), else empty.

Answers are streamed (``stream: true``, usage asked for with
``stream_options.include_usage``) and read by ``worker.engines.openai_answer``:
each token's text goes through the runaway guard's rules (the request's
``max_repeats`` and ``max_instances``); when they trigger, the engine closes the
connection (the server aborts the request) and returns the text up to and
including the triggering token with finish reason ``runaway``. A server that
rejects ``stream`` or answers plain JSON is read as before, and its whole
answer is cut the same way. Without a trigger, a streamed answer gives the same
result as the plain one.

Requests of a batch run concurrently (a bounded thread pool). Uses
``requests``: no OpenAI SDK needed.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

import requests
from PIL import Image

from common.images.decode import resize_for_model
from common.settings import DEFAULT_OPENAI_API_KEY, DEFAULT_OPENAI_CONCURRENCY
from converters.geometry import MAX_PIXELS, MIN_PIXELS
from converters.prompts import SYSTEM_PROMPT
from worker.engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingSettings,
    timed_batch,
    vllm_sampling_fields,
)
from worker.engines.openai_answer import (
    OpenAIEngineError,
    read_answer,
    result_from_answer,
    server_error,
)
from worker.scoring import SCORE_TOP_LOGPROBS

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""A reachable server accepts a connection at once; longer means it is down."""
DEFAULT_REQUEST_TIMEOUT_S = 600.0
"""4,096 output tokens on a busy server can take minutes; beyond this, give up."""
MAX_ATTEMPTS = 3
"""Tries per request on connection errors and 502/503/504 (restarts, overload)."""
RETRY_BACKOFF_S = 1.0
"""Wait before the second try, doubled for each further one."""
RETRY_STATUSES = frozenset({502, 503, 504})
"""Statuses of a server (or its proxy) that is restarting or overloaded."""
REJECTED_PARAM_STATUSES = frozenset({400, 422})
"""How servers answer a request field they do not know or accept."""
IMAGE_FORMAT = "JPEG"
"""JPEG at high quality: a tenth of PNG's bytes for photos, no visible change."""
JPEG_QUALITY = 95
"""Quality for JPEG images sent to the server."""
OPTIONAL_PARAMS = (
    "stream",
    "stream_options",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "top_k",
    "repetition_penalty",
    "return_token_ids",
    "logprobs",
    "top_logprobs",
)
"""Fields beyond the OpenAI standard (or streaming), dropped for servers that
reject them."""


def image_data_url(
    image: Image.Image, fmt: str = IMAGE_FORMAT, quality: int = JPEG_QUALITY
) -> str:
    """``data:image/...;base64,...`` of an RGB image."""
    buffer = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if fmt.upper() == "JPEG":
        rgb.save(buffer, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        rgb.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class OpenAIEngine(Engine):
    """Rex-Omni behind an OpenAI-compatible ``/v1/chat/completions``.

    Args:
        model: the served model name (``create_engine`` passes REXLABEL_MODEL,
            which is also what ``vllm serve IDEA-Research/Rex-Omni`` serves).
        device: accepted for the registry; the server owns the device.
        base_url: ``http://host:port/v1`` (REXLABEL_OPENAI_URL).
        api_key: bearer key; empty sends none (REXLABEL_OPENAI_API_KEY).
        concurrency: requests in flight per batch: enough for the server to
            batch them, few enough not to queue past its own limits
            (REXLABEL_OPENAI_CONCURRENCY).
        timeout_s: read timeout of one request.
        image_format: ``JPEG`` or ``PNG``.
        min_pixels / max_pixels: the area bounds images are resized within
            before sending (REXLABEL_MIN_PIXELS / REXLABEL_MAX_PIXELS).
        system_prompt: the chat's system message (REXLABEL_SYSTEM_PROMPT).
        check_model: ask ``/models`` at start-up whether ``model`` is served.
        session: a ``requests.Session`` (connection pooling, tests).
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        device: str | None = None,
        *,
        base_url: str = "",
        api_key: str = DEFAULT_OPENAI_API_KEY,
        concurrency: int = DEFAULT_OPENAI_CONCURRENCY,
        timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        image_format: str = IMAGE_FORMAT,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
        system_prompt: str = SYSTEM_PROMPT,
        check_model: bool = True,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url:
            raise OpenAIEngineError(
                "the openai engine needs REXLABEL_OPENAI_URL (e.g. "
                "http://127.0.0.1:8000/v1)"
            )
        self._model_id = model
        self.api_key = api_key
        self.concurrency = concurrency
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        self.timeout_s = timeout_s
        if image_format.upper() not in ("JPEG", "PNG"):
            raise ValueError(f"image_format must be JPEG or PNG, got {image_format!r}")
        self.image_format = image_format.upper()
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.system_prompt = system_prompt
        self.session = session or requests.Session()
        self.unsupported: set[str] = set()
        """Optional fields this server rejected; not sent again."""
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="rexlabel-openai"
        )
        if check_model:
            self._check_model()

    @property
    def model_id(self) -> str:
        return self._model_id

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _check_model(self) -> None:
        url = f"{self.base_url}/models"
        try:
            response = self.session.get(
                url, headers=self._headers(), timeout=(CONNECT_TIMEOUT_S, 30)
            )
        except requests.RequestException as exc:
            raise OpenAIEngineError(f"cannot reach {url}: {exc}") from None
        if response.status_code == 401:
            raise OpenAIEngineError(
                f"{url} answered 401: set REXLABEL_OPENAI_API_KEY to the server's key"
            )
        if not response.ok:
            log.warning("%s answered %s; not checking the model name", url, response)
            return
        try:
            served = [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if served and self._model_id not in served:
            raise OpenAIEngineError(
                f"{self.base_url} does not serve model {self._model_id!r}; it serves "
                f"{', '.join(map(repr, served))} (set REXLABEL_MODEL)"
            )

    # Request body ---------------------------------------------------------
    def body(self, request: GenerationRequest) -> dict[str, Any]:
        """The chat-completions body for one request (image resized and inline)."""
        image = resize_for_model(
            request.image, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )
        body: dict[str, Any] = {
            "model": self._model_id,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": image_data_url(image, self.image_format)
                            },
                        },
                        {"type": "text", "text": request.prompt},
                    ],
                },
            ],
            **vllm_sampling_fields(request.sampling),
            "logprobs": True,
            "top_logprobs": SCORE_TOP_LOGPROBS,
            "return_token_ids": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with self._lock:
            for name in self.unsupported:
                body.pop(name, None)
        return body

    # Engine API -----------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        started = time.perf_counter()
        bodies = [self.body(r) for r in requests]
        preprocessed = time.perf_counter()
        futures = [
            self._pool.submit(self._complete, b, r.sampling)
            for b, r in zip(bodies, requests, strict=True)
        ]
        responses = [f.result() for f in futures]
        generated = time.perf_counter()
        results = [result_from_answer(data, self.base_url) for data, _ in responses]
        requested = [{"request": seconds} for _, seconds in responses]
        return timed_batch(results, started, preprocessed, generated, requested)

    def _complete(
        self, body: dict[str, Any], sampling: SamplingSettings
    ) -> tuple[dict[str, Any], float]:
        """POST one body; drops rejected optional fields and retries transient
        failures. Returns the answer as a non-streaming response JSON (cut
        where the runaway guard triggers) and the seconds it took."""
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                response = self.session.post(
                    url,
                    json=body,
                    headers=self._headers(),
                    timeout=(CONNECT_TIMEOUT_S, self.timeout_s),
                    stream=True,
                )
                if response.ok:
                    data = read_answer(response, sampling, url)
                    return data, time.perf_counter() - started
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if attempt < MAX_ATTEMPTS:
                    time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
                    continue
                raise OpenAIEngineError(f"{url}: {exc}") from None
            if response.status_code in REJECTED_PARAM_STATUSES:
                rejected = self._rejected_params(body, response.text)
                if rejected:
                    self._forget(rejected, response)
                    body = {k: v for k, v in body.items() if k not in rejected}
                    attempt -= 1  # not a failure of the server
                    continue
            if response.status_code in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
                continue
            raise _http_error(url, response)

    @staticmethod
    def _rejected_params(body: dict[str, Any], message: str) -> set[str]:
        """Optional fields a 400/422 message names (any other 400, such as a
        prompt past the context length, keeps every field). Names match whole
        (``stream`` is not named by ``stream_options``). A refusal naming
        ``logprobs`` while ``top_logprobs`` is asked (vLLM's ``--max-logprobs``
        below it) drops the alternatives only: without ``logprobs`` there
        would be no scores at all."""
        rejected = {
            name
            for name in OPTIONAL_PARAMS
            if name in body and re.search(rf"(?<!\w){name}(?!\w)", message)
        }
        if "logprobs" in rejected and "top_logprobs" in body:
            rejected = (rejected - {"logprobs"}) | {"top_logprobs"}
        return rejected

    def _forget(self, rejected: set[str], response: requests.Response) -> None:
        with self._lock:
            new = rejected - self.unsupported
            self.unsupported |= rejected
        if new:
            log.warning(
                "%s rejected %s (HTTP %s); asking without %s from now on%s",
                self.base_url,
                ", ".join(sorted(new)),
                response.status_code,
                "them" if len(new) > 1 else "it",
                "; grammar tokens may be missing from its answers"
                if "skip_special_tokens" in new
                else "",
            )

    def capacity(self) -> str:
        return f"{self.concurrency} requests in flight; the server batches them"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()


def _http_error(url: str, response: requests.Response) -> OpenAIEngineError:
    """The error for a failed answer: its status and the standard phrase."""
    status = response.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    return server_error(url, f"answered HTTP {status} ({phrase})", response.text)
