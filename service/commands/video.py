"""``facerec watch SOURCE`` (print each person's decision as they pass) and ``facerec events export``."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from service.commands.backend import DATA_OPTION, load_settings, opened_stores
from service.commands.datadir import require_data_dir
from service.events.store import MOMENT, EventFilter, EventStore, unix_seconds

if TYPE_CHECKING:
    from service.video.pipeline import DueTrack, TrackDecision, TrackPipeline

events_app = typer.Typer(help="Track decisions recorded from videos and streams.", no_args_is_help=True)

CSV_COLUMNS = (
    "time",
    "name",
    "subject_id",
    "source",
    "track_id",
    "distance",
    "estimated_false_identification_rate",
    "first_s",
    "last_s",
    "frames",
    "id",
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An event set by the first SIGINT (Ctrl-C) or SIGTERM while the block runs; a second SIGINT interrupts as
    usual (KeyboardInterrupt). The first never raises inside a detection or an encoding: an exception thrown into
    the middle of a shared network call could leave it (and the decisions still to make) waiting for ever."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def watch(
    source: str = typer.Argument(
        ..., help="A video file, an rtsp:// or http(s):// URL, or a camera (/dev/video0 or 0)."
    ),
    fps: float = typer.Option(None, "--fps", min=0.1, max=60.0, help="Frames per second analysed (default 5)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per decision (JSON lines)."),
    data: Path = DATA_OPTION,
) -> None:
    """Track the faces in SOURCE and print one decision per person as each is decided (live sources: after a
    few frames; files: when the person leaves). Uses the local data dir's gallery (stop the server first, or
    add the camera to the server with POST /v1/streams). Ctrl-C (or SIGTERM) stops after the current frame and
    prints the decisions of the people still in view; a second Ctrl-C quits at once. A file that ends well before
    the duration its header announces (truncated) prints its decisions, then an error (exit status 1)."""
    from embeddings.errors import FaceRecError
    from service.bootstrap import default_analyzer, open_backend
    from service.gallery import GalleryLocked
    from service.media import pipeline_config, video_detector
    from service.video.decode import (
        NATIVE_FPS,
        FrameClock,
        VideoError,
        camera_index,
        check_complete,
        info,
        latest_frames,
        open_capture,
        redact,
        sample_frames,
    )
    from service.video.pipeline import TrackPipeline, for_period

    settings = load_settings(data=data)
    path = Path(source)
    is_file = camera_index(source) is None and "://" not in source
    if is_file and not path.is_file():
        raise typer.BadParameter(f"{'not a file' if path.exists() else 'no such file'}: {source}")
    try:
        require_data_dir(settings)  # a mistyped --data is said, not watched against a new empty gallery
        backend = open_backend(settings)
        gallery = backend.open_gallery()
    except GalleryLocked as exc:
        instead = "upload the video with POST /v1/videos" if is_file else "add the camera with POST /v1/streams"
        raise _fail(f"the data dir {settings.data} is in use by a server: {instead}") from exc
    except FaceRecError as exc:  # the database is unreachable, a file cannot be used...: one line
        raise _fail(f"{exc.code}: {exc.message}") from exc
    try:
        analyzer = default_analyzer(settings)
        config = pipeline_config(settings, analyzer, live=not is_file, detector=video_detector(settings, analyzer))
        rate = fps or settings.video_fps
        cap = open_capture(source)
        meta = info(cap) if is_file else None
        native = (meta.fps or NATIVE_FPS) if meta else rate  # a file's frames may be further apart
        pipe = TrackPipeline(analyzer, lambda: gallery, for_period(config, 1.0 / min(rate, native)), deferred=True)
        label = redact(source)
        started = time.time()

        def emit(d: TrackDecision) -> None:
            try:
                typer.echo(line(d))
                sys.stdout.flush()
            except BrokenPipeError:  # `facerec watch ... | head`: the reader has gone
                raise
            except OSError as exc:  # the output's disk is full (a log that grew for days) or failing
                raise _fail(f"cannot write the output: {exc.strerror or exc}") from exc

        def line(d: TrackDecision) -> str:
            v = d.vote
            if as_json:
                record = {
                    "source": label,
                    "track_id": d.track_id,
                    "subject_id": v.subject_id,
                    "name": v.name,
                    "distance": v.distance,
                    "estimated_false_identification_rate": v.estimated_fir,
                    "first_s": round(d.first_s, 3),
                    "last_s": round(d.last_s, 3),
                    "frames": d.frames,
                }
                return json.dumps(record)
            who = v.name if v.name is not None else "unknown"
            dist = f"{v.distance:.3f}" if v.distance is not None else "-"
            return f"{d.first_s:8.1f}s  track {d.track_id:<4} {who:<30} distance {dist}  frames {d.frames}"

        read = FrameClock()
        with stop_requested() as stop:
            frames = (
                sample_frames(cap, rate, read)
                if is_file
                else latest_frames(cap, rate, clock=lambda: time.time() - started, stop=stop)
            )
            try:
                for t, rgb in frames:
                    if stop.is_set():
                        break
                    for due in pipe.process(rgb, t).due:
                        decided = _decide(pipe, due, stop)
                        if decided is not None:
                            emit(decided)
            finally:
                frames.close()  # live: the reader thread stops and releases the capture itself
                if is_file:
                    cap.release()
            for d in pipe.finish():  # the people still in view when the source ended or Ctrl-C came
                emit(d)
            if meta is not None and not stop.is_set():
                check_complete(meta, read)  # as a video job: the decisions above, then an error
    except VideoError as exc:
        raise _fail(str(exc)) from exc
    except FaceRecError as exc:  # e.g. the database still away when the source ended
        raise _fail(f"{exc.code}: {exc.message}") from exc
    finally:
        backend.close()


def _decide(pipe: TrackPipeline, due: DueTrack, stop: threading.Event) -> TrackDecision | None:
    """A track's decision; while the gallery is away (a database restarting) it is tried again, with a line on
    stderr, for up to two minutes; then the person is reported on stderr as not decided and watching goes on."""

    from service.gallery.errors import StorageUnavailable
    from service.video.storage_retry import until_stored

    def waiting(exc: StorageUnavailable) -> None:
        typer.echo(f"warning: {exc.code}: {exc.message} (track {due.track_id} waits)", err=True)

    try:
        return until_stored(lambda: pipe.decide(due), waiting=waiting, stop=stop)
    except StorageUnavailable as exc:
        typer.echo(f"error: track {due.track_id} not decided: {exc.code}: {exc.message}", err=True)
        return None


def _when(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise typer.BadParameter(f"not a finite number of Unix seconds: {value}")
        return seconds
    try:
        return unix_seconds(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time or Unix seconds: {value}") from exc


@events_app.command("export")
def export(
    as_csv: bool = typer.Option(True, "--csv/--jsonl", help="CSV with a header row (default), or JSON lines."),
    subject_id: str = typer.Option(None, "--subject-id", help="Only this subject's events."),
    source: str = typer.Option(None, "--source", help="Only this source (stream:<id> or video:<id>)."),
    since: str = typer.Option(None, "--since", help=f"From this time ({MOMENT}), inclusive."),
    until: str = typer.Option(None, "--until", help=f"Up to this time ({MOMENT}), exclusive."),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of standard output."),
    data: Path = DATA_OPTION,
) -> None:
    """Write the events (of the database with ``FACEREC_DATABASE_URL``, else of the local data dir; readable while
    the server runs), oldest first: an attendance sheet. ``time`` is UTC; ``name`` is empty for unknown people."""
    from embeddings.errors import FaceRecError
    from service.bootstrap import event_store
    from service.events.store import EVENTS_FILE

    settings = load_settings(data=data)
    start, end = _when(since), _when(until)
    if start is not None and end is not None and end < start:  # as GET /v1/events: nothing would match
        raise typer.BadParameter("--until must not be before --since")
    try:
        require_data_dir(settings)
    except FaceRecError as exc:
        raise _fail(f"{exc.code}: {exc.message}") from exc
    if not settings.database_url and not (settings.data / EVENTS_FILE).is_file():
        raise _fail(f"no events in {settings.data}")
    with opened_stores(settings) as backend:
        _export(
            event_store(settings, backend),
            EventFilter(subject_id, source, start, end, 1000),
            as_csv=as_csv,
            output=output,
        )


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula in a CSV cell (OWASP's CSV injection list)."""


def spreadsheet_safe(value: object) -> object:
    """A text cell that would start a formula, prefixed with ``'`` so that a spreadsheet shows it as text (a
    subject named ``=HYPERLINK(...)`` stays a name); other values as they are."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def _export(store: EventStore, f: EventFilter, *, as_csv: bool, output: Path | None) -> None:
    try:
        out = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror}") from exc
    try:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore") if as_csv else None
        if writer is not None:
            writer.writeheader()
        cursor: int | None = None
        while True:
            page, cursor = store.query(dataclasses.replace(f, cursor=cursor))
            for event in page:
                row = event.to_dict()
                if writer is not None:
                    writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
                else:
                    out.write(json.dumps(row) + "\n")
            if cursor is None:
                break
        out.flush()
    except OSError as exc:  # the disk filled up, or an I/O error: one line, and no partial sheet left
        if output is None:
            raise
        with contextlib.suppress(OSError):
            out.close()
        if output.is_file():
            output.unlink(missing_ok=True)
        raise _fail(f"cannot write {output}: {exc.strerror or exc} (nothing written)") from exc
    finally:
        store.close()
        if output:
            with contextlib.suppress(OSError):  # closed above after a failed write
                out.close()
