"""A scripted Rex-Omni: an OpenAI-compatible chat server with fixed answers.

No tiny model here reads text, and the README model learnt no keypoints
(``worker.training.readme_tasks.TASK_SHARES``): the shape model answers
nothing on the README's keypoint config (0 of 4 images) and its OCR config
(0 of 16). To show what an annotator sees for these, ``rexlabel
serve`` runs its ``openai`` engine against this server instead: every step
after the model (the answer's grammar, parsing, scores from
log-probabilities, labels, parent ids, Label Studio results) is the real
one, only the answer is written here, in the exact form Rex-Omni writes it
(docs/rex-omni-output.md).

Answers are picked by the start of the prompt; a prompt with no answer gets
HTTP 400 naming it, so a changed prompt fails loudly instead of predicting
nothing. Coordinates are bins (0..999 of the image's side), so an answer fits
any image.
"""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "scripted-rex-omni"
"""The model name the server lists on /v1/models (REXLABEL_MODEL)."""

TOKEN_PROBABILITY = 0.9
"""Every answer token's probability (its log-probability is sent): scores
come out near this, below 1, so the UI shows a score that is not a default."""

KEYPOINT_PEOPLE = ((100, 125, 400, 958), (600, 83, 900, 916))
"""The two people's boxes (bins)."""

KEYPOINT_JOINTS = (
    {
        "nose": (250, 208), "left eye": (281, 183), "right eye": (218, 183),
        "left ear": None, "right ear": None,
        "left shoulder": (343, 375), "right shoulder": (156, 375),
        "left hip": (312, 708), "right hip": (187, 708),
    },
    {
        "nose": (750, 166), "left eye": None, "right eye": (718, 141),
        "left ear": None, "right ear": None,
        "left shoulder": (843, 333), "right shoulder": (656, 333),
        "left hip": (812, 666), "right hip": (687, 666),
    },
)  # fmt: skip
"""Each person's joints (bins; None: not visible, written ``unvisible``): the
first has every joint of the README's config, the second no left eye (a
joint not seen must not be listed)."""


def _keypoint_answer() -> str:
    """The keypoint answer as Rex-Omni writes it: a fenced JSON object."""
    people = {}
    for number, (box, joints) in enumerate(
        zip(KEYPOINT_PEOPLE, KEYPOINT_JOINTS, strict=True), start=1
    ):
        people[f"person{number}"] = {
            "bbox": " " + " ".join(f"<{v}>" for v in box) + " ",
            "keypoints": {
                joint: "unvisible" if xy is None else f" <{xy[0]}> <{xy[1]}> "
                for joint, xy in joints.items()
            },
        }
    return f"```json\n{json.dumps(people)}\n```"


KEYPOINT_ANSWER = _keypoint_answer()

OCR_LINES = {"OPEN 24 HOURS": (100, 150, 600, 300), "EXIT": (650, 600, 900, 750)}
"""Text lines and their boxes (bins) in the OCR answer."""

OCR_ANSWER = ", ".join(
    f"<|object_ref_start|>{text}<|object_ref_end|>"
    f"<|box_start|><{x0}><{y0}><{x1}><{y1}><|box_end|>"
    for text, (x0, y0, x1, y1) in OCR_LINES.items()
)

ANSWERS = {
    "Can you detect each person in the image": KEYPOINT_ANSWER,
    "Detect all text line and recognize them.": OCR_ANSWER,
}
"""Prompt start -> the answer (the README's keypoint and OCR configs)."""

TOKEN = re.compile(r"<\|[a-z_]+\|>|<\d+>|[^<]+|<")
"""How the answer is cut into tokens: special tokens and coordinate bins are
one token each, as in Rex-Omni's vocabulary."""


def answer_for(prompt: str) -> str | None:
    for start, answer in ANSWERS.items():
        if prompt.startswith(start):
            return answer
    return None


def completion(answer: str) -> dict[str, Any]:
    """A non-streamed chat completion of ``answer`` with per-token log-probs."""
    tokens = TOKEN.findall(answer + "<|im_end|>")
    logprob = math.log(TOKEN_PROBABILITY)
    return {
        "model": MODEL_ID,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "finish_reason": "stop",
                "logprobs": {
                    "content": [
                        {"token": t, "logprob": logprob, "bytes": None} for t in tokens
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(tokens)},
    }


def prompt_of(body: dict[str, Any]) -> str:
    """The text part of the last user message."""
    content = body["messages"][-1]["content"]
    return next(part["text"] for part in content if part.get("type") == "text")


class ScriptedRexOmni:
    """The server, on a free port of 127.0.0.1, in a thread; ``prompts`` lists
    every prompt asked. Use as a context manager."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, data: Any) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    return self._json(200, {"data": [{"id": MODEL_ID}]})
                return self._json(404, {"error": f"no {self.path}"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                prompt = prompt_of(body)
                server.prompts.append(prompt)
                answer = answer_for(prompt)
                if answer is None:
                    return self._json(400, {"error": f"no scripted answer: {prompt!r}"})
                return self._json(200, completion(answer))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The OpenAI base URL (REXLABEL_OPENAI_URL)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedRexOmni:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
