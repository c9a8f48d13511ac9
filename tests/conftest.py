"""Shared test setup: the offline G1 model and the third-party clips beside the checkout."""
import os, pathlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Tests and CI read the G1 from ../shared/menagerie when it exists and the user chose no root.
if (SHARED / "menagerie").is_dir() and not os.environ.get("MENAGERIE_ROOT"):
    os.environ["MENAGERIE_ROOT"] = str(SHARED / "menagerie")


@pytest.fixture(autouse=True)
def one_torch_thread():
    "Small tensors gain nothing from intra-op threads, and next to MuJoCo's thread pool they oversubscribe badly."
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def motions_dir() -> pathlib.Path:
    "The real third-party clips in ../shared/motions (skips the test where they are absent)."
    d = SHARED / "motions"
    if not d.is_dir(): pytest.skip("../shared/motions (third-party test clips) is not beside this checkout")
    return d


@pytest.fixture(scope="session")
def g1():
    from g1track.robot import load_g1
    return load_g1()


@pytest.fixture(scope="session")
def g1_physics():
    from g1track.robot import load_g1
    return load_g1(visual=False)
