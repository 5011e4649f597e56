"""common.logs, common.loglines and common.redaction: text/JSON lines, one line
per job with timings, nothing secret."""

from __future__ import annotations

import base64
import io
import json
import logging
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import loglines, logs, redaction
from common.jobspec import CallResult, ImageResult
from common.settings import SettingsError
from converters.prediction import Prediction
from converters.tasks import Task

LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def _jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlcw"


PAT = _jwt({"token_type": "refresh", "exp": 9_999_999_999, "user_id": 1})
ACCESS = _jwt({"token_type": "access", "exp": 1_900_000_000, "jti": "a1"})
PNG_B64 = base64.b64encode(bytes(range(256)) * 4).decode()


@pytest.fixture
def root_logger():
    """Restore the root logger's handlers and level after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _configure(fmt: str, environ: dict[str, str] | None = None) -> io.StringIO:
    stream = io.StringIO()
    env = {"LOG_LEVEL": "DEBUG", "LOG_FORMAT": fmt, **(environ or {})}
    logs.configure_logging(stream=stream, environ=env)
    return stream


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def _results() -> list[ImageResult]:
    box = Prediction(type="box", label="cat", coords=[1.0, 2.0, 30.0, 40.0])
    ok = ImageResult(
        id="7",
        task_id=7,
        width=64,
        height=48,
        calls=[
            CallResult(
                key="k",
                task=Task.DETECTION,
                predictions=[box],
                prompt_tokens=120,
                output_tokens=30,
                truncated=True,
                timings={"download": 0.5, "preprocess": 0.25, "generate": 2.0},
            ),
            CallResult(
                key="k2",
                task=Task.DETECTION,
                predictions=[],
                prompt_tokens=100,
                output_tokens=10,
                timings={"generate": 1.0, "postprocess": 0.125, "sam": 0.75},
            ),
        ],
    )
    failed = ImageResult(id="8", task_id=8, error="HTTP 404 for /data/upload/1/x.jpg")
    return [ok, failed]


def test_json_job_line_has_task_ids_timings_and_token_counts(root_logger):
    stream = _configure("json")
    summary = loglines.summarize_results(_results())
    loglines.log_job(
        logging.getLogger("rexlabel.test"),
        job_id="p1-v1-c0",
        task_ids=summary["task_ids"],
        duration_s=4.5,
        timings={**summary["timings"], "write": 0.0625},
        images=summary["images"],
        prompt_tokens=summary["prompt_tokens"],
        output_tokens=summary["output_tokens"],
        truncated=summary["truncated"],
        queue="rexlabel:bulk",
    )
    (line,) = _lines(stream)
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "rexlabel.test"
    assert entry["msg"] == "job p1-v1-c0 done"
    assert entry["job_id"] == "p1-v1-c0"
    assert entry["task_ids"] == [7, 8] and entry["task_count"] == 2
    assert entry["images"] == 2
    assert entry["duration_s"] == 4.5
    assert entry["download_s"] == 0.5
    assert entry["preprocess_s"] == 0.25
    assert entry["generate_s"] == 3.0
    assert entry["parse_s"] == 0.125  # "postprocess" maps onto parse
    assert entry["sam_s"] == 0.75
    assert entry["write_s"] == 0.0625
    assert entry["prompt_tokens"] == 220 and entry["output_tokens"] == 40
    assert entry["truncated"] == 1
    assert entry["queue"] == "rexlabel:bulk"
    assert entry["ts"].endswith("+00:00")


def test_summarize_results_counts_failed_images_and_accepts_dicts():
    results = _results()
    from_objects = loglines.summarize_results(results)
    from_dicts = loglines.summarize_results([r.to_dict() for r in results])
    assert from_objects == from_dicts
    assert from_objects["failed"] == 1
    assert from_objects["timings"]["generate"] == 3.0


def test_image_load_time_is_the_job_lines_download():
    results = _results()
    results[0].load_s, results[1].load_s = 0.25, 0.125
    summary = loglines.summarize_results(results)
    assert summary["timings"]["download"] == 0.5 + 0.25 + 0.125


def test_text_line_appends_fields_as_key_value(root_logger):
    stream = _configure("text")
    loglines.log_request(
        logging.getLogger("rexlabel.requests"),
        method="POST",
        path="/predict",
        status=200,
        duration_s=0.25,
        task_ids=[1, 2],
    )
    (line,) = _lines(stream)
    assert "INFO rexlabel.requests: POST /predict 200" in line
    assert "status=200" in line and "duration_s=0.250" in line
    assert "task_ids=[1, 2]" in line and "task_count=2" in line


def test_a_job_line_caps_the_task_id_list():
    record = logging.LogRecord("x", logging.INFO, "", 0, "", (), None)
    ids = list(range(loglines.MAX_TASK_IDS_LOGGED * 3))
    fields = loglines._task_id_fields(ids)
    record.__dict__.update(fields)
    assert len(record.task_ids) == loglines.MAX_TASK_IDS_LOGGED
    assert record.task_count == len(ids)


def test_no_token_header_key_or_image_reaches_the_output(root_logger):
    environ = {"LABEL_STUDIO_API_KEY": PAT, "BASIC_AUTH_PASS": "hunter2-basic-pass"}
    stream = _configure("json", environ)
    log = logging.getLogger("urllib3.connectionpool")  # a library's logger
    log.debug("POST /api/token/refresh/ body=%s", json.dumps({"refresh": PAT}))
    log.debug("headers: %s", {"Authorization": f"Bearer {ACCESS}"})
    log.info("GET /data/upload/1/a.jpg Authorization: Token %s", LEGACY_TOKEN)
    log.info("user pass is hunter2-basic-pass")
    log.info("payload data:image/png;base64,%s trailing", PNG_B64)
    log.info("raw %s", PNG_B64)
    logging.getLogger("rexlabel").info(
        "sent", extra={"api_key": "sk-abcdef123456", "headers": {"Cookie": "s=1"}}
    )
    out = stream.getvalue()
    for secret in (
        PAT,
        ACCESS,
        LEGACY_TOKEN,
        "hunter2-basic-pass",
        PNG_B64,
        "sk-abcdef123456",
        "s=1",
    ):
        assert secret not in out
    for entry in map(json.loads, _lines(stream)):  # still one JSON object per line
        assert entry["level"] in ("DEBUG", "INFO")
    assert "data:image/png;base64,<redacted> trailing" in out
    assert f"<redacted {len(PNG_B64)} base64 chars>" in out


def test_tracebacks_are_redacted_too(root_logger):
    stream = _configure("text", {"LABEL_STUDIO_API_KEY": LEGACY_TOKEN})
    try:
        raise RuntimeError(f"401 for Token {LEGACY_TOKEN}")
    except RuntimeError:
        logging.getLogger("rexlabel").exception("download failed")
    out = stream.getvalue()
    assert "RuntimeError: 401 for Token ***" in out
    assert LEGACY_TOKEN not in out


def test_redis_password_is_hidden_but_the_host_stays():
    text = redaction.redact_text("connecting to redis://:p4ssw0rd@redis:6379/0")
    assert text == "connecting to redis://:***@redis:6379/0"
    assert redaction.configured_secrets({"REDIS_URL": "redis://u:p4ssw0rd@h:1/0"}) == [
        "p4ssw0rd"
    ]


def test_ordinary_fields_survive_redaction():
    text = "prompt_tokens=12 output_tokens=40 Token exchange failed id=abc123 sha=" + (
        "a" * 64
    )
    assert redaction.redact_text(text) == text
    assert redaction.redact({"prompt_tokens": 5, "token_count": 3}) == {
        "prompt_tokens": 5,
        "token_count": 3,
    }


@settings(max_examples=60, deadline=None)
@given(
    token=st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
    prefix=st.text(max_size=30),
    style=st.sampled_from(
        [
            "Authorization: Token {t}",
            '{{"Authorization": "Bearer {t}"}}',
            "GET /x?access_token={t}&a=1",
            "api_key={t}",
            "token: {t}",
        ]
    ),
)
def test_tokens_in_any_header_or_query_style_are_removed(token, prefix, style):
    line = prefix + " " + style.format(t=token)
    assert token not in redaction.redact_text(line)


def test_configuring_twice_keeps_one_handler(root_logger):
    _configure("text")
    _configure("json")
    ours = [h for h in root_logger.handlers if h.get_name() == "rexlabel"]
    assert len(ours) == 1
    assert isinstance(ours[0].formatter, logs.JsonFormatter)


def test_json_logs_quiet_other_writers_unless_the_user_chose(root_logger, monkeypatch):
    for name in logs.JSON_LOG_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    _configure("text")
    assert not any(name in os.environ for name in logs.JSON_LOG_ENVIRONMENT)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # the user's own choice stays
    _configure("json")
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["VLLM_CONFIGURE_LOGGING"] == "0"
    assert os.environ["TQDM_DISABLE"] == "0"


def test_json_logs_take_over_a_librarys_own_stderr_handler(root_logger):
    library = logging.getLogger("rexlabel-test-library")
    own, kept = logging.StreamHandler(io.StringIO()), logging.NullHandler()
    library.addHandler(own)
    library.propagate = False
    try:
        _configure("text")
        assert not logs.json_logging()
        logs.route_library_logs()  # text logs: the library keeps its format
        assert own in library.handlers and library.propagate is False
        stream = _configure("json")  # routes what is already there
        assert logs.json_logging()
        assert library.handlers == [] and library.propagate is True
        library.warning("from the library")
        (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
        assert line["msg"] == "from the library"

        library.propagate = False  # imported later: the worker routes again
        library.addHandler(own)
        library.addHandler(kept)
        logs.route_library_logs()
        assert library.handlers == [kept] and library.propagate is False
    finally:
        library.handlers.clear()
        library.propagate = True


def test_a_bad_log_format_names_the_variable(root_logger):
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        logs.configure_logging(environ={"LOG_FORMAT": "yaml"})


def test_phase_fields_sum_repeated_phases():
    fields = loglines.phase_fields({"generate": 0.5, "generate_s": 0.25})
    assert fields["generate_s"] == 0.75 and fields["write_s"] == 0.0
    # counts and totals that engines put beside their timings are not phases
    fields = loglines.phase_fields({"generate": 1.0, "batch_size": 4, "total": 9.0})
    assert set(fields) == {f"{p}_s" for p in loglines.JOB_PHASES}


def test_a_url_password_is_redacted_but_a_backslash_trick_keeps_its_port():
    redacted = redaction.redact_text("http://user:hunter22@host/x")
    assert redacted == f"http://user:{redaction.REDACTED}@host/x"
    trick = "http://127.0.0.1:6379\\@ls.example/x.png"
    assert redaction.redact_text(trick) == trick


FORGED_LINE = "2026-12-06 04:00:00,000 WARNING backend.app: FORGED admin login ok"
BREAKERS = [
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\x0b",
    "\x0c",
    "\x1b[31m",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
]
"""Characters a client can put in a path or a task field that split a line
(for a terminal, a log shipper or str.splitlines) or drive a terminal."""


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("breaker", BREAKERS, ids=ascii)
def test_a_client_supplied_line_break_cannot_forge_a_log_line(
    root_logger, fmt, breaker
):
    """A request path (or a task id, or any logged text) that carries a line
    break writes exactly one line; JSON still decodes to what was logged."""
    stream = _configure(fmt)
    path = f"/x{breaker}{FORGED_LINE}"
    loglines.log_request(
        logging.getLogger("rexlabel.requests"),
        method=f"GET{breaker}",
        path=path,
        status=401,
        duration_s=0.001,
        task_ids=[f"1{breaker}{FORGED_LINE}"],
    )
    logging.getLogger("backend.app").warning("predict: task 1: %s", path)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert not any(line.startswith(FORGED_LINE) for line in lines), lines
    for line in lines:
        assert not set(map(ord, line)) & logs.LINE_BREAKING, ascii(line)
    if fmt == "json":
        request_line, warning = (json.loads(line) for line in lines)
        assert request_line["task_ids"] == [f"1{breaker}{FORGED_LINE}"]
        assert FORGED_LINE in warning["msg"]


def test_escaping_leaves_ordinary_text_and_tracebacks_alone(root_logger):
    stream = _configure("text")
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("x").exception("caf\u00e9 / \u65e5\u672c / path=%s", "/a b")
    head, *trace = stream.getvalue().splitlines()
    assert head.endswith("x: caf\u00e9 / \u65e5\u672c / path=/a b")
    assert trace[0].startswith("Traceback") and trace[-1] == "ValueError: bad"


def test_printable_escapes_what_would_drive_a_terminal():
    printable = logs.printable
    assert printable("猫 café") == "猫 café"
    shown = printable("cat\x1b[31m\u202e\x07\n\x9b")
    assert shown == "cat\\x1b[31m\\u202e\\x07\\n\\x9b"
    as_json = printable('"cat\x1b\u202e"', json_escapes=True)
    assert as_json == '"cat\\u001b\\u202e"'
    assert json.loads(as_json) == "cat\x1b\u202e"
