"""Model cards, a project's ``current`` pointer, and the chain of bases a
fine-tuned directory stands on."""

from __future__ import annotations

import json
import os

import pytest

from common.model_store import (
    CARD_FORMAT,
    CARD_MAX_BYTES,
    CURRENT_POINTER,
    MAX_BASE_DEPTH,
    MODEL_CARD_NAME,
    ModelStoreError,
    base_chain,
    project_models_dir,
    publish,
    read_card,
    read_pointer,
    resolve_model,
    weights_identity,
    write_card,
)

HUB_ID = "IDEA-Research/Rex-Omni"


def _model(path, **card):
    """A model directory with ``card`` written (format added)."""
    path.mkdir(parents=True, exist_ok=True)
    write_card(path, card)
    return path


def _raw_card(path, body):
    path.mkdir(parents=True, exist_ok=True)
    (path / MODEL_CARD_NAME).write_text(
        body if isinstance(body, str) else json.dumps(body)
    )
    return path


# --- cards -----------------------------------------------------------------


def test_card_round_trip_adds_the_format(tmp_path):
    _model(tmp_path, method="lora", base=HUB_ID, weights_sha256="ab" * 32)
    assert read_card(tmp_path) == {
        "format": CARD_FORMAT,
        "method": "lora",
        "base": HUB_ID,
        "weights_sha256": "ab" * 32,
    }
    assert [p.name for p in tmp_path.iterdir()] == [MODEL_CARD_NAME]  # no temp left


def test_a_directory_without_a_card_has_none(tmp_path):
    assert read_card(tmp_path) is None
    assert read_card(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"format": "rexlabel-model/99", "method": "full"}, "not a rexlabel-model/1"),
        ({"method": "full"}, "not a rexlabel-model/1"),
        ([CARD_FORMAT], "not a rexlabel-model/1"),
        ({"format": CARD_FORMAT, "method": "qlora"}, "method 'qlora'"),
        ({"format": CARD_FORMAT}, "method None"),
        ({"format": CARD_FORMAT, "method": "lora"}, "must name its base"),
        ({"format": CARD_FORMAT, "method": "lora", "base": 3}, "must name its base"),
        ("{not json", "cannot read"),
    ],
)
def test_bad_cards_are_refused_naming_the_file(tmp_path, body, says):
    _raw_card(tmp_path, body)
    with pytest.raises(ModelStoreError, match=says) as caught:
        read_card(tmp_path)
    assert MODEL_CARD_NAME in str(caught.value)


def test_an_oversize_card_is_refused_before_it_is_parsed(tmp_path):
    _raw_card(tmp_path, " " * (CARD_MAX_BYTES + 1))
    with pytest.raises(ModelStoreError, match=f"over {CARD_MAX_BYTES} bytes"):
        read_card(tmp_path)


def test_writing_a_card_with_an_unknown_method_is_refused(tmp_path):
    with pytest.raises(ModelStoreError, match="method 'adapter'"):
        write_card(tmp_path, {"method": "adapter"})
    assert not (tmp_path / MODEL_CARD_NAME).exists()
    assert list(tmp_path.iterdir()) == []


# --- the current pointer ---------------------------------------------------


def test_publish_points_current_at_a_finished_run(tmp_path):
    _model(tmp_path / "run-1", method="full")
    _model(tmp_path / "run-2", method="full")
    assert read_pointer(tmp_path) is None
    publish(tmp_path, "run-1")
    assert (tmp_path / CURRENT_POINTER).read_text() == "run-1\n"
    publish(tmp_path, "run-2")
    assert read_pointer(tmp_path) == "run-2"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_publish_replaces_the_pointer_in_one_rename(tmp_path, monkeypatch):
    """A reader never sees half a name: the new pointer is written aside and
    renamed over the old one."""
    _model(tmp_path / "run-1", method="full")
    _model(tmp_path / "run-2", method="full")
    publish(tmp_path, "run-1")
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        assert read_pointer(tmp_path) == "run-1"  # still the old one, whole
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    publish(tmp_path, "run-2")
    assert len(renames) == 1 and renames[0][1] == CURRENT_POINTER
    assert renames[0][0].startswith(".current-")
    assert read_pointer(tmp_path) == "run-2"


def test_publish_refuses_bad_names_and_unfinished_runs(tmp_path):
    (tmp_path / "half").mkdir()  # no card: training did not finish
    with pytest.raises(ModelStoreError, match="not a finished run"):
        publish(tmp_path, "half")
    with pytest.raises(ModelStoreError, match="not a run name"):
        publish(tmp_path, "../elsewhere")
    assert not (tmp_path / CURRENT_POINTER).exists()


@pytest.mark.parametrize("content", ["../x", "/etc", "a/b", ".hidden", "", "x" * 200])
def test_a_pointer_that_is_not_one_run_name_is_refused(tmp_path, content):
    (tmp_path / CURRENT_POINTER).write_text(content + "\n")
    with pytest.raises(ModelStoreError, match="not a run name"):
        read_pointer(tmp_path)
    with pytest.raises(ModelStoreError, match="not a run name"):
        resolve_model(str(tmp_path))


def test_resolve_model_follows_the_pointer(tmp_path):
    run = _model(tmp_path / "project-3" / "run-7", method="full")
    publish(tmp_path / "project-3", "run-7")
    assert resolve_model(str(tmp_path / "project-3")) == str(run)
    assert resolve_model(str(run)) == str(run)  # a model directory is itself
    assert resolve_model(HUB_ID) == HUB_ID


def test_a_pointer_to_a_missing_run_is_an_error_naming_it(tmp_path):
    (tmp_path / CURRENT_POINTER).write_text("run-gone\n")
    with pytest.raises(ModelStoreError, match="'run-gone', which is missing"):
        resolve_model(str(tmp_path))


def test_project_models_dir_takes_positive_integer_ids(tmp_path):
    assert project_models_dir(4, tmp_path) == tmp_path / "project-4"
    for bad in (0, -1, True, "4", 4.0):
        with pytest.raises(ModelStoreError, match="project id"):
            project_models_dir(bad, tmp_path)


# --- bases -----------------------------------------------------------------


def test_base_chain_reads_a_relative_base_from_the_adapters_directory(tmp_path):
    base = _model(tmp_path / "base", method="full", weights_sha256="b")
    adapter = _model(tmp_path / "runs" / "a", method="lora", base="../../base")
    chain = base_chain(str(adapter))
    assert [os.path.realpath(ref) for ref, _ in chain] == [
        str(adapter.resolve()),
        str(base.resolve()),
    ]
    assert [card["method"] for _, card in chain] == ["lora", "full"]


def test_base_chain_ends_at_a_hub_id(tmp_path):
    adapter = _model(tmp_path / "a", method="lora", base=HUB_ID)
    assert base_chain(str(adapter)) == [
        (str(adapter), read_card(adapter)),
        (HUB_ID, None),
    ]


def test_base_chain_follows_a_base_that_is_a_project_directory(tmp_path):
    project = tmp_path / "project-1"
    base_run = _model(project / "run-1", method="full")
    publish(project, "run-1")
    adapter = _model(tmp_path / "a", method="lora", base=str(project))
    assert [ref for ref, _ in base_chain(str(adapter))][-1] == str(base_run)


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_adapters_whose_bases_loop_are_refused(tmp_path, loop):
    if loop == "self":
        start = _model(tmp_path / "a", method="lora", base=".")
    else:
        start = _model(tmp_path / "a", method="lora", base="../b")
        _model(tmp_path / "b", method="lora", base="../a")
    with pytest.raises(ModelStoreError, match="loop"):
        base_chain(str(start))


def test_adapters_stack_up_to_the_depth_limit(tmp_path):
    def stack(adapters):
        root = tmp_path / f"stack-{adapters}"
        _model(root / "m0", method="full")
        for n in range(1, adapters + 1):
            _model(root / f"m{n}", method="lora", base=f"../m{n - 1}")
        return str(root / f"m{adapters}")

    assert len(base_chain(stack(MAX_BASE_DEPTH))) == MAX_BASE_DEPTH + 1
    with pytest.raises(ModelStoreError, match=f"over {MAX_BASE_DEPTH} deep"):
        base_chain(stack(MAX_BASE_DEPTH + 1))


# --- weights identity ------------------------------------------------------


def test_weights_identity_of_a_hub_id_or_plain_weights_is_none(tmp_path):
    assert weights_identity(HUB_ID) is None
    (tmp_path / "config.json").write_text("{}")
    assert weights_identity(str(tmp_path)) is None


def test_weights_identity_is_the_cards_digest_joined_down_the_chain(tmp_path):
    base = _model(tmp_path / "base", method="full", weights_sha256="b" * 64)
    adapter = _model(tmp_path / "a", method="lora", base="../base", weights_sha256="1")
    assert weights_identity(str(base)) == "b" * 64
    assert weights_identity(str(adapter)) == "1+" + "b" * 64
    on_hub = _model(tmp_path / "h", method="lora", base=HUB_ID, weights_sha256="2")
    assert weights_identity(str(on_hub)) == "2"


def test_weights_identity_changes_when_the_pointer_moves(tmp_path):
    _model(tmp_path / "run-1", method="full", weights_sha256="1")
    _model(tmp_path / "run-2", method="full", weights_sha256="2")
    publish(tmp_path, "run-1")
    first = weights_identity(str(tmp_path))
    publish(tmp_path, "run-2")
    assert (first, weights_identity(str(tmp_path))) == ("1", "2")


def test_weights_identity_of_an_unreadable_chain_says_so(tmp_path):
    _raw_card(tmp_path, {"format": CARD_FORMAT, "method": "lora"})
    assert weights_identity(str(tmp_path)).startswith("unreadable: ")
