import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own array cache and data folder: no test sees another's files."""
    root = tmp_path_factory.mktemp("cnnlab-home")
    monkeypatch.setenv("CNNLAB_CACHE", str(root / "cache"))
    monkeypatch.setenv("CNNLAB_DATA", str(root / "datasets"))
    return root
