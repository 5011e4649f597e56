"""Reading an OpenAI-compatible server's chat-completion answer.

An answer is an event stream (``stream: true``) read chunk by chunk, or plain
JSON from servers that do not stream; either becomes one answer in the
non-streaming shape (:func:`read_answer`), then a ``GenerationResult``
(:func:`result_from_answer`). Each token's text goes through the runaway
guard's rules (``worker.engines.runaway_guard_text``); when they trigger, the
answer is cut after that token with finish reason ``runaway`` and reading
stops, which closes the connection (the server aborts the request). Without
per-token texts (no log-probs) the content text is scanned instead. The
engine's HTTP side (request bodies, retries) is ``worker.engines.openai_engine``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests

from converters.grammar import IM_END
from worker.engines.base import FinishReason, GenerationResult, SamplingSettings
from worker.engines.runaway_guard_text import ContentScanner, RunawayScanner
from worker.scoring import SCORE_TOP_LOGPROBS, bin_value

log = logging.getLogger(__name__)

SSE_DATA = b"data:"
"""Prefix of a server-sent event's payload line."""
SSE_DONE = b"[DONE]"
"""The payload that ends an OpenAI stream."""
SERVER_TEXT_LOGGED = 500
"""Characters of a model server's error body the log keeps: its message, not
a whole HTML error page."""


class OpenAIEngineError(RuntimeError):
    """The server failed a request; the message names the server and the reason."""


def server_error(url: str, what: str, sent: Any) -> OpenAIEngineError:
    """The error ``<url> <what>``. What the server ``sent`` (a body that may
    name its files and internal hosts) goes to the log, never into a message
    that reaches a client."""
    log.warning("%s %s: %s", url, what, str(sent)[:SERVER_TEXT_LOGGED])
    return OpenAIEngineError(f"{url} {what}; what it sent is in the worker's log")


def first_choice(data: Any, where: str) -> tuple[dict[str, Any], str]:
    """The first choice of a non-streaming answer and its message text; an
    answer without one raises OpenAIEngineError naming ``where``."""
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise server_error(where, "returned no choice", data) from None
    return choice, content


def coordinate_alternatives(entry: dict[str, Any]) -> dict[str, float]:
    """A coordinate token's ``top_logprobs`` (text -> log-prob); empty for other
    tokens (scoring reads only those) and for malformed entries."""
    if bin_value(str(entry.get("token", ""))) is None:
        return {}
    found: dict[str, float] = {}
    alternatives = entry.get("top_logprobs")
    if not isinstance(alternatives, list):
        return found
    for alternative in alternatives[:SCORE_TOP_LOGPROBS]:  # as many as asked
        if not isinstance(alternative, dict):
            continue
        try:
            found[str(alternative.get("token", ""))] = float(alternative["logprob"])
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
    return found


def read_answer(
    response: requests.Response, sampling: SamplingSettings, url: str
) -> dict[str, Any]:
    """The answer of a 2xx response: an event stream read chunk by chunk
    until the end or a runaway (then the connection is closed), or plain
    JSON (servers that do not stream)."""
    answer = StreamedAnswer(sampling.max_repeats, sampling.max_instances, url)
    with response:
        kind = response.headers.get("Content-Type", "")
        if not kind.startswith("text/event-stream"):
            try:
                data = response.json()
            except ValueError:
                raise OpenAIEngineError(f"{url} returned non-JSON") from None
            answer.add_plain(data)
            return answer.response()
        for line in response.iter_lines():
            if not line.startswith(SSE_DATA):
                continue  # blank separators, comments, event names
            payload = line[len(SSE_DATA) :].strip()
            if payload == SSE_DONE:
                continue  # the body ends here: read it out, keep the connection
            try:
                chunk = json.loads(payload)
            except ValueError:
                raise server_error(url, "streamed non-JSON", payload) from None
            if answer.add(chunk):
                break  # leaving the block closes the connection
    answer.finish()
    return answer.response()


def result_from_answer(data: dict[str, Any], url: str) -> GenerationResult:
    """The ``GenerationResult`` of an answer in the non-streaming shape
    (:func:`read_answer`'s); ``url`` names the server in errors."""
    choice, content = first_choice(data, url)
    entries = (choice.get("logprobs") or {}).get("content") or None
    texts = [e.get("token", "") for e in entries] if entries else []
    logprobs = [float(e.get("logprob", 0.0)) for e in entries] if entries else None
    top = [coordinate_alternatives(e) for e in entries] if entries else None
    token_ids = [int(t) for t in choice.get("token_ids") or []]
    text = content.removesuffix(IM_END)  # some servers keep the stop token
    if not texts:
        texts = [content] if content else []
    finish = choice.get("finish_reason") or FinishReason.STOP
    if finish not in (FinishReason.LENGTH, FinishReason.RUNAWAY):
        finish = FinishReason.STOP
    usage = data.get("usage") or {}
    output_tokens = int(usage.get("completion_tokens") or len(token_ids) or len(texts))
    return GenerationResult(
        text=text,
        token_ids=token_ids,
        token_texts=texts,
        token_logprobs=logprobs,
        finish_reason=FinishReason(finish),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=output_tokens,
        token_top_logprobs=top,
    )


class StreamedAnswer:
    """One choice assembled from streamed chunks (or a plain answer) into the
    non-streaming response shape, cut where the runaway guard triggers.

    Per-token texts come from the log-probs; without them the content text is
    scanned. A trigger on the stop token itself is no runaway (the
    transformers engine reports ``stop`` there too).
    """

    def __init__(self, max_repeats: int, max_instances: int, url: str) -> None:
        self.url = url
        self.tokens = RunawayScanner(
            max_repeats=max_repeats, max_instances=max_instances
        )
        self.content_scanner = ContentScanner(
            max_repeats=max_repeats, max_instances=max_instances
        )
        self.content = ""
        self.entries: list[dict[str, Any]] = []
        self.has_logprobs = False
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.prompt_tokens: int | None = None
        self.runaway = False

    def add_plain(self, data: dict[str, Any]) -> None:
        """A non-streaming answer, read as one chunk."""
        choice, content = first_choice(data, self.url)
        chunk = {
            "choices": [
                {
                    "delta": {"content": content},
                    "logprobs": choice.get("logprobs"),
                    "token_ids": choice.get("token_ids"),
                    "finish_reason": choice.get("finish_reason"),
                }
            ],
            "usage": data.get("usage"),
        }
        if not self.add(chunk):
            self.finish()

    def add(self, chunk: dict[str, Any]) -> bool:
        """Take one streamed chunk; True when the guard triggered (stop reading)."""
        if not isinstance(chunk, dict):
            raise server_error(self.url, "streamed a chunk that is no object", chunk)
        if chunk.get("error"):
            raise server_error(self.url, "failed while streaming", chunk["error"])
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("prompt_token_ids") is not None:
            self.prompt_tokens = len(chunk["prompt_token_ids"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if self._add_choice(choice):
                return True
        return False

    def _add_choice(self, choice: dict[str, Any]) -> bool:
        piece = (choice.get("delta") or {}).get("content") or ""
        logprobs = choice.get("logprobs")
        entries = (logprobs or {}).get("content") or []
        self.has_logprobs = self.has_logprobs or bool(entries)
        ids = [int(t) for t in choice.get("token_ids") or []]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if entries:
            texts = [e.get("token", "") for e in entries]
            for k, text in enumerate(texts):
                if text != IM_END and self.tokens.feed(text):
                    tail = "".join(texts[k + 1 :])
                    if tail and piece.endswith(tail):
                        piece = piece[: -len(tail)]
                    elif tail:
                        piece = "".join(texts[: k + 1])
                    self._cut(piece, entries[: k + 1], ids[: k + 1])
                    return True
        elif not self.has_logprobs:
            cut = self.content_scanner.feed(piece)
            kept = (self.content + piece)[:cut] if cut is not None else ""
            if cut is not None and not kept.endswith(IM_END):
                self._cut(kept[len(self.content) :], [], [])
                return True
        self.content += piece
        self.entries += entries
        self.token_ids += ids
        return False

    def _cut(self, piece: str, entries: list, ids: list[int]) -> None:
        self.content += piece
        self.entries += entries
        self.token_ids += ids
        self.finish_reason = FinishReason.RUNAWAY
        self.runaway = True

    def finish(self) -> None:
        """The stream ended: scan content text still held back."""
        if self.runaway or self.has_logprobs:
            return
        cut = self.content_scanner.finish()
        if cut is not None and not self.content[:cut].endswith(IM_END):
            self.content = self.content[:cut]
            self.finish_reason = FinishReason.RUNAWAY
            self.runaway = True

    def response(self) -> dict[str, Any]:
        """The answer in the shape of a non-streaming chat completion."""
        choice: dict[str, Any] = {
            "message": {"role": "assistant", "content": self.content},
            "finish_reason": self.finish_reason,
            "logprobs": {"content": self.entries} if self.entries else None,
        }
        if self.token_ids:
            choice["token_ids"] = self.token_ids
        usage = dict(self.usage or {})
        if self.runaway:  # the server's count (if any came) is past the cut
            known = len(self.entries) or len(self.token_ids)
            usage["completion_tokens"] = known or None
        if not usage.get("prompt_tokens") and self.prompt_tokens:
            usage["prompt_tokens"] = self.prompt_tokens
        return {"choices": [choice], "usage": usage}
