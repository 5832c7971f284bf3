"""``facerec keys create|list|revoke``: API keys for the server, kept hashed in ``<data>/keys.db`` (or the database).

Creating and revoking a key is written to the audit log (``<data>/audit.log``, actor ``cli:<os user>``, via ``cli``;
a creation with the key's ``expires_at``); the token never is."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from service.audit import Action, cli_actor
from service.bootstrap import Backend
from service.commands.backend import load_settings, opened_stores
from service.keys import SCOPES, ApiKey, KeyNotFound, expiry

app = typer.Typer(help="Create, list and revoke API keys (X-API-Key).", no_args_is_help=True)

DATA = typer.Option(None, "--data", help="Data dir (default $FACEREC_DATA or ./data).")
NAME_MAX = 200
"""Longest key name, characters (printable ones only: ``keys list`` shows it on a terminal)."""


def _audit(backend: Backend, action: Action, key: ApiKey) -> None:
    target: dict[str, str | None] = {"key_id": key.id, "scope": key.scope}
    if action == "key.create":
        target["expires_at"] = key.expires_at
    backend.audit.record(action, actor=cli_actor(), target=target, via="cli")


@app.command("create")
def create(
    scope: str = typer.Option(..., "--scope", help="admin (everything) or recognize (detect/verify/identify)."),
    name: str = typer.Option("", "--name", help="A label to recognise the key by."),
    expires_in: str = typer.Option(None, "--expires-in", help="Expire this long from now: 30m, 12h, 90d, 2w."),
    expires_at: str = typer.Option(None, "--expires-at", help="Expire at this ISO 8601 time (no zone: UTC)."),
    data: Path = DATA,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a key and print its token once; only its sha256 is stored. Without --expires-in/--expires-at it
    lives until `keys revoke`."""
    try:
        expires = expiry(expires_in=expires_in, expires_at=expires_at)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if scope not in SCOPES:
        typer.echo(f"error: --scope must be one of {', '.join(SCOPES)}", err=True)
        raise typer.Exit(2)
    if len(name) > NAME_MAX or not name.isprintable():
        typer.echo(f"error: --name must be at most {NAME_MAX} printable characters", err=True)
        raise typer.Exit(2)
    with opened_stores(load_settings(data=data)) as backend:
        key, token = backend.keys.create(scope=scope, name=name, expires_at=expires)
        try:
            _audit(backend, "key.create", key)
        except Exception as exc:  # no usable key whose token nobody saw and the audit log does not record
            backend.keys.revoke(key.id)
            typer.echo(f"error: the audit log cannot be written ({exc}); the new key {key.id} was revoked", err=True)
            raise typer.Exit(1) from None
    if as_json:
        fields = {"id": key.id, "name": key.name, "scope": key.scope, "expires_at": key.expires_at, "token": token}
        typer.echo(json.dumps(fields))
        return
    typer.echo(token)
    until = f", expires {key.expires_at}" if key.expires_at else ""
    typer.echo(f"key {key.id} ({key.scope}{until}) created; the token above is shown only this once.", err=True)


@app.command("list")
def list_keys(data: Path = DATA, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every key with its scope, expiry, last use and state (active, revoked or expired); tokens are never shown.
    The last use is recorded at most once a minute by each server."""
    with opened_stores(load_settings(data=data), existing=True) as backend:
        keys = backend.keys.list()
    if as_json:
        fields = ("id", "name", "scope", "created_at", "expires_at", "last_used_at", "revoked_at", "state")
        typer.echo(json.dumps([{f: getattr(k, f) for f in fields} for k in keys]))
        return
    table = Table("id", "name", "scope", "created", "expires", "last used", "state")
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.state == "revoked" else k.state  # when it expired: "expires"
        table.add_row(k.id, k.name, k.scope, k.created_at, k.expires_at or "never", k.last_used_at or "never", state)
    Console().print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's id (see `keys list`)."), data: Path = DATA) -> None:
    """Revoke a key at once: the server refuses it from its next request."""
    with opened_stores(load_settings(data=data), existing=True) as backend:
        known = {k.id: k for k in backend.keys.list()}
        if key_id in known and known[key_id].revoked_at is not None:  # an expired key can still be revoked
            typer.echo(f"key {key_id} was already revoked ({known[key_id].revoked_at})")
            return
        try:
            key = backend.keys.revoke(key_id)
        except KeyNotFound as exc:
            typer.echo(f"error: no key {key_id!r}", err=True)
            raise typer.Exit(1) from exc
        try:
            _audit(backend, "key.revoke", key)
        except Exception as exc:
            typer.echo(f"error: key {key.id} is revoked, but the audit log cannot be written ({exc})", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"key {key.id} revoked")
