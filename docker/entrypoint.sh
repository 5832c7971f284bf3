#!/usr/bin/env bash
# facerec container entrypoint (see docs/DEPLOY.md).
#
#   <image>                      -> facerec serve (after the first-key bootstrap below)
#   <image> keys create --scope admin
#   <image> subjects list ...    -> any facerec subcommand runs as `facerec <args>`
#   <image> bash                 -> anything else is run as given
#
# First admin key. The server refuses to listen off loopback (and in a container it must listen on 0.0.0.0)
# until an API key exists. When FACEREC_BOOTSTRAP_ADMIN_KEY_FILE is set and the data dir has never had a key
# (keys.db holds no key at all, revoked ones included), `serve` first creates one admin key named "bootstrap":
#   - FACEREC_BOOTSTRAP_ADMIN_KEY_FILE=/path  writes the token to that file, mode 600, owned by the container user;
#   - FACEREC_BOOTSTRAP_ADMIN_KEY_FILE=-      prints the token once to the log instead.
# Once any key has existed, nothing is created again: revoking every key does not make a restart mint a new one.
set -euo pipefail

# The facerec subcommands (service/cli.py); tests/deploy checks this list against the CLI.
FACEREC_COMMANDS="serve enroll identify verify subjects keys weights eval audit train models reindex gallery db calibrate watch events photos backup restore"

log() {
    printf 'facerec-entrypoint: %s\n' "$*" >&2
}

bootstrap_admin_key() {
    local target="${FACEREC_BOOTSTRAP_ADMIN_KEY_FILE:-}"
    if [ -z "$target" ]; then
        return 0
    fi
    # `keys list --json` prints [] when keys.db has never held a key; a failure here (say, a data dir the
    # container user cannot write) stops the container with facerec's own error. It reads only a data dir that
    # exists: make the one `serve` is about to use (it would make it too).
    mkdir -p -- "${FACEREC_DATA:-./data}"
    local keys_json
    keys_json="$(facerec keys list --json)"
    if [ "$keys_json" != "[]" ]; then
        return 0
    fi
    if [ "$target" = "-" ]; then
        local token
        token="$(facerec keys create --scope admin --name bootstrap)"
        log "created the first admin key; its token is printed once below. Store it safely: it is not kept."
        printf 'FACEREC_BOOTSTRAP_ADMIN_KEY=%s\n' "$token"
        return 0
    fi
    local dir tmp
    dir="$(dirname -- "$target")"
    mkdir -p -- "$dir"
    # mktemp creates the file with mode 600, so the token is never readable by others, even for a moment.
    tmp="$(mktemp -- "$dir/.bootstrap-admin-key.XXXXXX")"
    if ! facerec keys create --scope admin --name bootstrap >"$tmp"; then
        rm -f -- "$tmp"
        log "could not create the first admin key"
        return 1
    fi
    chmod 600 -- "$tmp"
    mv -f -- "$tmp" "$target"
    log "created the first admin key; its token is in $target (mode 600). Copy it somewhere safe, then delete the file."
}

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case " $FACEREC_COMMANDS " in
*" $1 "*)
    if [ "$1" = "serve" ]; then
        bootstrap_admin_key
    fi
    exec facerec "$@"
    ;;
esac

case "$1" in
-*) exec facerec "$@" ;;
*) exec "$@" ;;
esac
