import pytest

from tests.fake_label_studio import FakeLabelStudio


@pytest.fixture
def ls(tmp_path):
    with FakeLabelStudio(tmp_path / "root") as server:
        yield server
