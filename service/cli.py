"""The ``facerec`` command line: a thin layer over ``embeddings`` and the service.

Each command group lives in ``service/commands/<group>.py`` and is registered here.
"""

from __future__ import annotations

import os

import typer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.commands import audit as audit_cmd
from service.commands import backup as backup_cmd
from service.commands import calibrate as calibrate_cmd
from service.commands import db as db_cmd
from service.commands import enroll as enroll_cmd
from service.commands import evaluate as evaluate_cmd
from service.commands import gallery as gallery_cmd
from service.commands import keys as keys_cmd
from service.commands import models as models_cmd
from service.commands import photos as photos_cmd
from service.commands import recognize as recognize_cmd
from service.commands import reindex as reindex_cmd
from service.commands import serve as serve_cmd
from service.commands import subjects as subjects_cmd
from service.commands import train as train_cmd
from service.commands import vector_index as vector_index_cmd
from service.commands import video as video_cmd
from service.commands import weights as weights_cmd

app = typer.Typer(help="facerec: self-hosted face recognition.", no_args_is_help=True, add_completion=False)
# Typer lists the commands first, then the groups, each in the order registered here.
app.command("serve")(serve_cmd.serve)
app.command("enroll")(enroll_cmd.enroll)
app.command("identify")(recognize_cmd.identify)
app.command("verify")(recognize_cmd.verify)
app.command("train")(train_cmd.train)
app.command("reindex")(reindex_cmd.reindex)
app.command("watch")(video_cmd.watch)
app.command("calibrate")(calibrate_cmd.calibrate)
app.command("backup")(backup_cmd.backup)
app.command("restore")(backup_cmd.restore)
app.add_typer(subjects_cmd.app, name="subjects")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(weights_cmd.app, name="weights")
app.add_typer(evaluate_cmd.app, name="eval")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(models_cmd.app, name="models")
app.add_typer(video_cmd.events_app, name="events")
app.add_typer(photos_cmd.app, name="photos")
app.add_typer(gallery_cmd.app, name="gallery")
app.add_typer(db_cmd.app, name="db")
vector_index_cmd.register(gallery_cmd.app)

# The console script is service.entry:main (it imports this module inside its Ctrl-C guard).

if __name__ == "__main__":  # pragma: no cover
    app()
