import pytest

from tests.unit.mvcc.helpers import Harness


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path / "data")
    yield harness
    harness.close()
