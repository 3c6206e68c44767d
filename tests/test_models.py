import time

import pytest

from llavaguard.errors import ModelLoadError
from llavaguard.models import DEFAULT_MODEL, KNOWN_MODELS, resolve_model

from conftest import run_cli


def test_default_model_is_known():
    assert KNOWN_MODELS[DEFAULT_MODEL].family == "llava-onevision"


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model folder"):
        resolve_model(str(tmp_path))


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        resolve_model(str(tmp_path / "nope"))


def test_uncached_hub_id_offline_fails_fast():
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"AIML-TUDA/LlavaGuard-v1\.2-0\.5B-OV-hf.*offline"):
        resolve_model(DEFAULT_MODEL)
    assert time.perf_counter() - started < 5


def test_cli_offline_without_copy(tmp_path):
    out = run_cli("assess", str(tmp_path), timeout=60)
    assert out.returncode == 2
    assert "offline" in out.stderr and DEFAULT_MODEL in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_sglang_only_weights_are_explained():
    with pytest.raises(ModelLoadError, match="SGLang"):
        resolve_model("AIML-TUDA/LlavaGuard-v1.2-7B-OV")


def test_cli_unreachable_model_says_so_quickly(tmp_path):
    """With no network and no local copy the command names the model and exits 2."""
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    started = time.perf_counter()
    # Online mode, as a user would run it, against a hub endpoint that refuses connections
    # (a closed loopback port), so the download path fails without leaving this machine.
    env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = run_cli("assess", str(img), env=env, timeout=60)
    assert out.returncode == 2
    assert DEFAULT_MODEL in out.stderr
    assert out.stdout == ""
    assert time.perf_counter() - started < 30
