"""``facerec train <folder>``: fine-tune FaceNet on a folder per person and write a model directory.

A thin layer over ``embeddings.training.trainer.train_folder``; see docs/FINETUNE.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def train(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="<folder>/<person>/<image>: the LFW layout"),
    name: str = typer.Option("custom", "--name", help="Model name; the id is ft-<name>-<UTC yyyymmddHHMMSS>"),
    loss: str = typer.Option("triplet", "--loss", help="triplet (semi-hard mining) or contrastive (Siamese)"),
    margin: float = typer.Option(
        None, "--margin", min=0.0, max=4.0, help="Loss margin (default: triplet 0.2, contrastive 1.1)"
    ),
    freeze_up_to: str = typer.Option(
        None, "--freeze-up-to", help="Last frozen block, e.g. Mixed_7a (default), Block8_4, Block17_10, Mixed_6a"
    ),
    people_per_batch: int = typer.Option(30, "--people-per-batch", "-P", min=2, help="P people per batch"),
    images_per_person: int = typer.Option(4, "--images-per-person", "-K", min=2, help="K images per person"),
    lr: float = typer.Option(5e-5, "--lr", min=0.0, max=1.0, help="Adam learning rate"),
    max_steps: int = typer.Option(4000, "--max-steps", min=1, help="Stop after this many batches"),
    max_minutes: float = typer.Option(
        10.0, "--max-minutes", min=0.0, max=7 * 24 * 60.0, help="Stop after this much training time"
    ),
    eval_every: int = typer.Option(100, "--eval-every", min=1, help="Validate every N steps"),
    patience: int = typer.Option(6, "--patience", min=1, help="Stop after N validations without improvement"),
    variants: int = typer.Option(4, "--variants", min=1, help="Cached variants per image (crop, mirror, augmented)"),
    val_fraction: float = typer.Option(
        0.3, "--val-fraction", min=0.0, max=0.9, help="Share of people held out (half selection, half gate)"
    ),
    max_per_person: int = typer.Option(None, "--max-per-person", min=2, help="Use at most N images per person"),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the split, the augmentation and the sampler"),
    resume: bool = typer.Option(False, "--resume", help="Continue from this setup's last checkpoint"),
    work_dir: Path = typer.Option(
        None, "--work-dir", file_okay=False, help="Caches and checkpoints (default <cache>/training/<name>)"
    ),
    weights: Path = typer.Option(
        None, "--weights", exists=True, dir_okay=False, help="Base weights (default: the pretrained model)"
    ),
    distill: float = typer.Option(
        None, "--distill", min=0.0, max=1e6, help="Weight of the pull towards the starting model's embeddings (docs)"
    ),
    l2sp: float = typer.Option(
        None, "--l2sp", min=0.0, max=1e6, help="Weight of the L2-SP pull towards the starting weights"
    ),
    eval_root: Path = typer.Option(
        None, "--eval-root", exists=True, file_okay=False, help="A separate labelled folder scored before and after"
    ),
    keep_rejected: bool = typer.Option(
        False, "--keep-rejected", help="Save a model the gate rejects (marked rejected, never selectable)"
    ),
) -> None:
    """Fine-tune on FOLDER (people split by person into train, selection and gate people), select on the
    operating points serving uses, and compare with the starting model on the gate people: only a model better
    beyond noise is saved as ``<cache>/models/<model_id>/`` (``model.weights.h5``, ``card.json``). Exit code 3:
    no better model found; 2: the folder does not suit; 1: a file could not be read or written."""
    from embeddings.training.fit import FitConfig, StepReport
    from embeddings.training.gate import summary_lines
    from embeddings.training.losses import LOSSES
    from embeddings.training.network import CUT_POINTS, DEFAULT_CUT
    from embeddings.training.trainer import TrainOptions, train_folder

    if loss not in LOSSES:
        raise typer.BadParameter(f"choose one of {', '.join(sorted(LOSSES))}", param_hint="--loss")
    cut = freeze_up_to or DEFAULT_CUT
    if cut not in CUT_POINTS:
        raise typer.BadParameter(f"choose one of {', '.join(CUT_POINTS)}", param_hint="--freeze-up-to")
    defaults = FitConfig()
    options = TrainOptions(
        name=name,
        cut=cut,
        fit=FitConfig(
            loss=loss,
            margin=margin,
            people_per_batch=people_per_batch,
            images_per_person=images_per_person,
            learning_rate=lr,
            max_steps=max_steps,
            max_minutes=max_minutes,
            eval_every=eval_every,
            patience=patience,
            seed=seed,
            distill=defaults.distill if distill is None else distill,
            l2sp=defaults.l2sp if l2sp is None else l2sp,
        ),
        n_variants=variants,
        val_fraction=val_fraction,
        max_per_person=max_per_person,
        seed=seed,
        eval_root=eval_root,
        keep_rejected=keep_rejected,
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:

        def stage(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total, info="")
            return lambda n: bar.advance(task, n)

        fit_task = bar.add_task("train", total=max_steps, info="", visible=False)

        def on_step(r: StepReport) -> None:
            val = "" if r.val_score is None else f" val score {r.val_score:.4f}"
            info = f"loss {r.loss:.4f} active {r.active:.0%}{val}"
            bar.update(fit_task, completed=r.step, info=info, visible=True)

        try:
            model_dir, card = train_folder(
                folder,
                options,
                weights=weights,
                work_dir=work_dir,
                resume=resume,
                stage=stage,
                on_step=on_step,
            )
        except ValueError as exc:
            console.print(f"error: {exc}")
            raise typer.Exit(2) from exc
        except OSError as exc:  # an unwritable work dir or cache, a full disk: one line, not a traceback
            console.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(1) from exc
    gate = card["gate"]
    lines = summary_lines({**card["validation"], **gate}, "gate people (never used for selection)")
    if "eval_root" in card:
        lines += summary_lines(card["eval_root"], f"--eval-root {card['eval_root']['root']}")
    steps = f"{card['params']['steps']} steps ({card['params']['stopped']}, best {card['params']['best_step']})"
    if gate["accepted"]:
        console.print(f"better model found: {gate['reason']}; {steps}, {card['train_seconds']:.0f} s")
    else:
        kept = "kept as rejected (not selectable)" if model_dir else "not registered (--keep-rejected keeps it)"
        console.print(f"no better model found: {gate['reason']}; {kept}; {steps}, {card['train_seconds']:.0f} s")
    for line in lines:
        console.print(line)
    # open-set calibration tables for a registered model, from the validation people it was not trained on
    tables, normalisation = None, None
    if gate["accepted"]:
        from service.commands.calibrate import calibrate_folder

        try:
            names = card["data"]["val_people_names"]
            tables, summary = calibrate_folder(card["model_id"], folder, people=names, seed=seed)
            normalisation = summary["normalisation"]
            console.print(f"calibration tables from {summary['people']} validation people: {tables}")
            console.print(f"score normalisation: {normalisation or 'none (fewer than 13 people)'}")
        except (ValueError, OSError) as exc:  # too few people with faces, tables not writable: uncalibrated
            console.print(f"no calibration tables: {exc}")
    out = {
        "model_id": card["model_id"] if model_dir else None,
        "model_dir": str(model_dir) if model_dir else None,
        "status": card["status"],
        "calibration": str(tables) if tables else None,
        "normalisation": normalisation,
    }
    typer.echo(json.dumps(out))
    if not gate["accepted"]:
        raise typer.Exit(3)
