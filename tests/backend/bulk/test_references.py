"""backend.bulk.references: which image a reference entry belongs to."""

from __future__ import annotations

import json

import pytest

from backend.bulk.references import load_references
from backend.bulk.sources import SourceError


def _refs(tmp_path, *lines):
    path = tmp_path / "refs" / "boxes.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_entries_match_exactly_or_by_the_longest_tail(tmp_path):
    refs = load_references(
        _refs(
            tmp_path,
            {"image": "set/a.jpg", "boxes": [[0, 0, 5, 5]], "label": "cup"},
            {"image": "other/set/a.jpg", "boxes": [[1, 1, 5, 5]], "label": "cup"},
            {"image": "/data/upload/3/b.jpg", "boxes": [[2, 2, 5, 5]], "label": "cup"},
            {"image": "https://x.test/c.jpg", "boxes": [[3, 3, 5, 5]], "label": "mug"},
        )
    )
    assert refs.labels == ["cup", "mug"]
    # relative to the reference file
    assert refs.boxes_for(str(tmp_path / "refs" / "set" / "a.jpg")) == {
        "cup": [[0.0, 0.0, 5.0, 5.0]]
    }
    # the longest tail wins
    assert refs.boxes_for("/mnt/other/set/a.jpg") == {"cup": [[1.0, 1.0, 5.0, 5.0]]}
    # Label Studio's /data/ paths are paths: exact, or by their tail
    assert refs.boxes_for("/data/upload/3/b.jpg") == {"cup": [[2.0, 2.0, 5.0, 5.0]]}
    # URLs only exactly; no tail of another image's name
    assert refs.boxes_for("https://x.test/c.jpg") == {"mug": [[3.0, 3.0, 5.0, 5.0]]}
    assert refs.boxes_for("https://y.test/c.jpg") is None
    assert refs.boxes_for("/mnt/a.jpg") is None


def test_an_entry_is_never_used_for_two_images(tmp_path):
    refs = load_references(
        _refs(tmp_path, {"image": "a.jpg", "boxes": [[0, 0, 5, 5]], "label": "cup"})
    )
    assert refs.boxes_for("/x/a.jpg")
    assert refs.boxes_for("/x/a.jpg")  # the same image again is fine
    with pytest.raises(SourceError, match=r"match both /x/a\.jpg and /y/a\.jpg"):
        refs.boxes_for("/y/a.jpg")


def test_coco_categories_must_exist(tmp_path):
    path = tmp_path / "refs.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "categories": [{"id": 1, "name": "cup"}],
                "annotations": [
                    {"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 0]}
                ],
            }
        )
    )
    with pytest.raises(SourceError, match="no category named 'mug' \\(it has 'cup'\\)"):
        load_references(path, ["mug"])
    with pytest.raises(SourceError, match="annotation 9: bbox must be"):
        load_references(path)
