"""``embedstream model``: export the embedding model to ONNX ahead of time (image build)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from embedstream.cli_output import ExitCode, JsonOption, print_json

model_app = typer.Typer(help="The embedding model: ONNX exports.", no_args_is_help=True)


@model_app.command("export")
def export(
    variant: Annotated[
        list[str] | None,
        typer.Option(help="onnx (fp32) and/or onnx-int8; repeat it; default: both"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="sentence-transformers folder (default: EMBEDSTREAM_MODEL or the "
            "packaged all-MiniLM-L6-v2)"
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="export cache (default: EMBEDSTREAM_MODEL_CACHE, .data/models)"),
    ] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Export the model folder to ONNX into the cache (once: a cached export is kept).

    Needs the `workers` extra (torch). Run it at image build time with the
    EMBEDSTREAM_MODEL_CACHE the workers will use; a worker exports on start when the
    cache has nothing for its model. Exits 1 when the folder cannot run on ONNX (with
    --json: `not_exportable` says why)."""
    from rich.console import Console

    from embedstream.adapters.embedder import model_name, resolve_model
    from embedstream.adapters.model_cache import VARIANTS, NotExportable, can_export
    from embedstream.adapters.model_folder import ModelFolder
    from embedstream.config import AppSettings, EmbedSettings
    from embedstream.logging import configure_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app_settings = AppSettings()
    configure_logging(app_settings.log_level, json=app_settings.json_logs)
    console = Console(stderr=True)
    settings = EmbedSettings()
    wanted = variant or list(VARIANTS)
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise typer.BadParameter(
            f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}", param_hint="--variant"
        )
    if not can_export():
        console.print(
            "[red]exporting needs torch, sentence-transformers and onnx (the `workers` "
            "extra: pip install torch==2.13.0 'embedstream[workers]'); this installation "
            "has the run time only[/red]"
        )
        raise typer.Exit(ExitCode.FAILED)
    from embedstream.adapters.onnx_export import export as run_export

    source = resolve_model(model if model is not None else settings.model)
    folder = ModelFolder(source.path)
    target = cache if cache is not None else settings.model_cache
    exported: list[dict[str, Any]] = []
    for name in VARIANTS:  # fp32 before int8 (int8 is quantized from it)
        if name not in wanted:
            continue
        try:
            graph, manifest, fresh = run_export(folder, name, target)
        except NotExportable as exc:
            console.print(f"[red]{exc}[/red]")
            if as_json:
                print_json({"exported": exported, "not_exportable": str(exc)})
            raise typer.Exit(ExitCode.FAILED) from exc
        against = "torch" if name == "onnx" else "onnx fp32"
        agreement = manifest.get("agreement_with_torch") or manifest.get("agreement_with_fp32")
        agreement = agreement or {"min_cosine": float("nan"), "max_abs_diff": float("nan")}
        exported.append(
            {
                "variant": name,
                "graph": str(graph),
                "fresh": fresh,
                "model": model_name(source.name, name),
                "dim": manifest["dim"],
                "against": against,
                "min_cosine": agreement["min_cosine"],
                "max_abs_diff": agreement["max_abs_diff"],
            }
        )
        console.print(
            f"{name}: {graph} ({'exported' if fresh else 'cached'}); model "
            f"{model_name(source.name, name)!r}, dim {manifest['dim']}; vs {against}: "
            f"min cosine {agreement['min_cosine']:.6f}, max abs diff "
            f"{agreement['max_abs_diff']:.1e}",
            soft_wrap=True,
        )
    if as_json:
        print_json({"exported": exported, "cache": str(target)})
