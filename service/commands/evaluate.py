"""``facerec eval lfw``: the verification benchmark on LFW pairs with the full pipeline on the raw images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from service.commands.progress import progress_bar

app = typer.Typer(help="Evaluate the pipeline on face verification benchmarks.", no_args_is_help=True)
console = Console(stderr=True)


def _parse_grid(text: str) -> list[float]:
    """``--sweep``'s margins, e.g. ``"0.1,0.2"``; a bad list is a usage error (exit 2)."""
    try:
        margins = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"not a list of numbers: {text!r}", param_hint="--sweep") from None
    if not all(0.0 <= m <= 1.0 for m in margins):
        raise typer.BadParameter("margins are fractions of the box, 0 to 1", param_hint="--sweep")
    return margins


@app.command("lfw")
def lfw(
    root: Path = typer.Option(..., exists=True, file_okay=False, help="LFW image root: <root>/<Name>/<Name>_NNNN.jpg"),
    pairs: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="pairs.txt (View 2) or pairsDevTest.txt (View 1)"
    ),
    out: Path = typer.Option(Path("reports/lfw"), help="Output dir: report.json, roc.png, histogram.png, caches"),
    margin: float = typer.Option(None, help="Crop margin as a fraction of the box (default: the library default)"),
    rotate: bool = typer.Option(True, "--rotate/--no-rotate", help="Level the eye line before cropping"),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Mirror-image test-time augmentation"),
    sweep: str = typer.Option(
        "", help="Also compare margins, e.g. '0.1,0.2,0.3': each with rotate on/off and flip on/off"
    ),
    save_embeddings: Path = typer.Option(None, help="Write the embeddings of the chosen settings to this .npz"),
    encoder_precision: str = typer.Option(
        "fp32", "--encoder", help="Encoder precision: fp32 (TensorFlow), bf16 or int8 (OpenVINO)"
    ),
) -> None:
    """Run detect -> align -> encode on every image of the pairs file and print the verification figures.

    A detector miss is counted, and every pair that includes a missed image is scored at distance 2.0 (predicted
    "different"), so misses cost accuracy instead of being dropped.
    """
    from embeddings import weights as weights_mod
    from embeddings.align import DEFAULT_MARGIN
    from embeddings.dataset import AlignSettings, detect_primary_faces, embed_detected, pair_distances
    from embeddings.detector import FaceDetector
    from embeddings.encoders import PRECISIONS, create_encoder
    from embeddings.evaluation import plot_histogram, plot_roc, read_pairs, summarize

    if encoder_precision not in PRECISIONS:
        raise typer.BadParameter(f"one of {', '.join(PRECISIONS)}", param_hint="--encoder")
    try:  # every option is checked before anything is written or detected
        protocol = read_pairs(pairs)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"not an LFW pairs file: {exc}", param_hint="--pairs") from None
    grid = _parse_grid(sweep) if sweep else []
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file", param_hint="--out")
    out.mkdir(parents=True, exist_ok=True)
    paths = list(dict.fromkeys(p for pr in protocol for p in (pr.a, pr.b)))
    console.print(
        f"{pairs.name}: {len(protocol)} pairs, {len(paths)} images, {len({pr.fold for pr in protocol})} fold(s)"
    )
    detector = FaceDetector()
    with progress_bar(console) as bar:
        task = bar.add_task("detect", total=len(paths))
        detections = detect_primary_faces(
            root,
            paths,
            detector=detector,
            cache_file=out / "detections.json",
            progress=lambda n: bar.advance(task, n),
        )
    misses = sorted(p for p in paths if detections.get(p) is None)
    encoder = create_encoder(weights_mod.resolve(), encoder_precision)
    chosen = AlignSettings(DEFAULT_MARGIN if margin is None else margin, rotate, flip)
    settings = [chosen]
    if sweep:
        settings += [AlignSettings(m, r, f) for m in grid for r in (False, True) for f in (False, True)]
        settings = list(dict.fromkeys(settings))
    same = np.array([pr.same for pr in protocol])
    folds = np.array([pr.fold for pr in protocol])
    results = []
    for s in settings:
        with progress_bar(console) as bar:
            task = bar.add_task(f"encode {s.label}", total=len(paths))
            embs = embed_detected(
                root,
                {p: detections[p] for p in paths},
                encoder=encoder,
                settings=s,
                progress=lambda n, t=task, b=bar: b.advance(t, n),  # type: ignore[misc]
            )
        dist = pair_distances(embs, [(pr.a, pr.b) for pr in protocol])
        summary = summarize(dist, same, folds)
        results.append({"settings": {"margin": s.margin, "rotate": s.rotate, "flip_tta": s.flip_tta}, **summary})
        if s == chosen:
            chosen_dist, chosen_summary, chosen_embs = dist, summary, embs
    title = f"LFW {pairs.name}, {chosen.label}"
    plot_roc(chosen_dist, same, out / "roc.png", title)
    plot_histogram(chosen_dist, same, chosen_summary["threshold"], out / "histogram.png", title)
    report = {
        "pairs_file": str(pairs),
        "images": len(paths),
        "detector_misses": len(misses),
        "missed_images": misses,
        "miss_handling": "pairs with a missed image are scored at distance 2.0 (predicted different)",
        "encoder": encoder.precision,
        "chosen": results[0],
        "sweep": results[1:],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if save_embeddings is not None:
        keys = [k for k, v in chosen_embs.items() if v is not None]
        np.savez_compressed(
            save_embeddings,
            paths=np.array(keys),
            names=np.array([k.split("/")[0] for k in keys]),
            embeddings=np.stack([chosen_embs[k] for k in keys]).astype(np.float32),  # type: ignore[misc]
        )
    table = Table(title=f"LFW verification ({pairs.name}, {len(protocol)} pairs, misses {len(misses)})")
    for col in ("settings", "accuracy", "TAR@FAR1e-3", "TAR@FAR1e-2", "EER", "threshold"):
        table.add_column(col)
    for r in results:
        st = r["settings"]
        table.add_row(
            AlignSettings(st["margin"], st["rotate"], st["flip_tta"]).label,
            f"{100 * r['accuracy_mean']:.2f}% ± {100 * r['accuracy_std']:.2f}",
            f"{r['tar_at_far_1e-3']:.4f}",
            f"{r['tar_at_far_1e-2']:.4f}",
            f"{100 * r['eer']:.2f}%",
            f"{r['threshold']:.4f}",
        )
    Console().print(table)
    typer.echo(f"report: {out / 'report.json'}  plots: {out / 'roc.png'}, {out / 'histogram.png'}")
