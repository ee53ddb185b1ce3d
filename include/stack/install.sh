#!/usr/bin/env bash
# Install what the local stack needs: Debian packages, the Python venv and the
# Leaflet that preview pages load.
# Idempotent and fast when everything is already there.
#   include/stack/install.sh
set -euo pipefail
# shellcheck source=include/stack/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# chromium: the preview page's browser test (driven by playwright, never `playwright install`);
# redis-server: the Celery broker of the scaled-out stack (LS4_EXECUTOR=celery)
DEB_PACKAGES=(postgresql-15 postgresql-15-postgis-3 cgi-mapserver lighttpd gdal-bin curl openssl chromium
    redis-server)
# Machines of this kind come with Node.js and npm; Debian's npm where they don't.
command -v npm >/dev/null || DEB_PACKAGES+=(npm)
LOCK="$LS4_ROOT/requirements.lock"
# ls4 itself (ls4_ops from plugins/, its `ls4` command), installed editable.
PYPROJECT="$LS4_ROOT/pyproject.toml"
# Names what the sync did: a venv synced without bytecode, or without ls4
# installed into it, is synced again.
STAMP="$LS4_VENV/.ls4-synced-with-project"
# Served by lighttpd at /vendor/leaflet/ (stack.sh): preview pages load no CDN.
# Pinned like requirements.lock: the npm registry's integrity of that version.
LEAFLET=leaflet@1.9.4
LEAFLET_INTEGRITY=sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==
LEAFLET_DIR="$LS4_VENV/vendor/leaflet"

log() { printf 'install: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian() {
    local missing=() p
    for p in "${DEB_PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && { log "debian packages present"; return; }
    log "installing ${missing[*]}"
    as_root apt-get update
    # policy-rc.d 101 keeps the postinst scripts from starting the system
    # lighttpd (port 80), postgresql (port 5432) and redis (6379) servers; the stack runs
    # its own instances on its own ports and state dir.
    local rc=/usr/sbin/policy-rc.d had_rc=
    [ -e "$rc" ] && had_rc=1
    [ -n "$had_rc" ] || { printf '#!/bin/sh\nexit 101\n' | as_root tee "$rc" >/dev/null; as_root chmod 755 "$rc"; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        || { [ -n "$had_rc" ] || as_root rm -f "$rc"; return 1; }
    [ -n "$had_rc" ] || as_root rm -f "$rc"
    stop_system_services
}

# Whatever a postinst may have started anyway: not ours, and in the way of
# nothing but memory, so stop it and keep it from starting at boot.
stop_system_services() {
    local s
    for s in lighttpd postgresql redis-server; do
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            as_root systemctl disable --now "$s" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$s" ]; then
            as_root "/etc/init.d/$s" stop >/dev/null 2>&1 || true
        fi
    done
}

find_uv() {
    command -v uv && return
    log "uv not on PATH: pip install --user uv" >&2
    local py bin
    py="$(command -v python3.11 || command -v python3)"
    "$py" -m pip install --quiet --user uv >&2 \
        || "$py" -m pip install --quiet --user --break-system-packages uv >&2 \
        || return 0
    bin="$("$py" -m site --user-base)/bin/uv"
    if [ -x "$bin" ]; then echo "$bin"; fi
}

install_python() {
    if [ -x "$LS4_VENV/bin/python" ] && [ -x "$LS4_VENV/bin/ls4" ] && [ -e "$STAMP" ] \
        && [ ! "$LOCK" -nt "$STAMP" ] && [ ! "$PYPROJECT" -nt "$STAMP" ]; then
        log "venv up to date ($LS4_VENV)"
        return
    fi
    local uv
    uv="$(find_uv || true)"
    # ls4 goes in without resolving anything (the lock pinned every dependency)
    # and without build isolation: setuptools comes from the lock too, so
    # nothing is fetched to build it. A sync removes it (it is not in the
    # lock), so it is installed after every sync.
    if [ -n "$uv" ]; then
        # A system Python 3.11 only: nothing outside the registries is reachable.
        [ -x "$LS4_VENV/bin/python" ] \
            || UV_PYTHON_DOWNLOADS=never "$uv" venv --python 3.11 "$LS4_VENV"
        log "uv pip sync $LOCK"
        # Compiled bytecode: without it every DAG parse and task start compiles
        # boto3, Airflow and the rest again (PYTHONDONTWRITEBYTECODE is common
        # in containers), ~0.4 s of each DAG-folder parse here.
        "$uv" pip sync --compile-bytecode --python "$LS4_VENV/bin/python" "$LOCK"
        log "uv pip install -e $LS4_ROOT (the ls4 command)"
        "$uv" pip install --quiet --no-deps --no-build-isolation --python "$LS4_VENV/bin/python" -e "$LS4_ROOT"
    else
        [ -x "$LS4_VENV/bin/python" ] || python3.11 -m venv "$LS4_VENV"
        log "pip install --require-hashes -r $LOCK"
        "$LS4_VENV/bin/python" -m pip install --quiet --require-hashes -r "$LOCK"
        log "pip install -e $LS4_ROOT (the ls4 command)"
        "$LS4_VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$LS4_ROOT"
    fi
    touch "$STAMP"
}

install_leaflet() {
    if [ "$(cat "$LEAFLET_DIR/.ls4-integrity" 2>/dev/null)" = "$LEAFLET_INTEGRITY" ]; then
        log "$LEAFLET present"
        return
    fi
    log "npm pack $LEAFLET into $LEAFLET_DIR"
    local tmp tarball
    tmp="$(mktemp -d)"
    tarball="$tmp/$(cd "$tmp" && npm pack --silent "$LEAFLET")"
    [ "sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)" = "$LEAFLET_INTEGRITY" ] \
        || { rm -rf "$tmp"; log "$LEAFLET does not have the pinned integrity"; return 1; }
    rm -rf "$LEAFLET_DIR"
    mkdir -p "$LEAFLET_DIR"
    tar -xzf "$tarball" -C "$LEAFLET_DIR" --strip-components=1 --no-same-owner
    echo "$LEAFLET_INTEGRITY" >"$LEAFLET_DIR/.ls4-integrity"
    rm -rf "$tmp"
}

install_debian
install_python
install_leaflet
log "done"
