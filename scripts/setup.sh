# Shared set-up for scripts/demo and scripts/test: a virtual environment in .venv with the
# package installed in editable mode. Sourced, not run; expects $ROOT.

PYTHON=${PYTHON:-python3}

ensure_venv() {  # ensure_venv EXTRAS  (e.g. "embedded-broker,fast")
    local stamp="$ROOT/.venv/.installed-$1"
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        echo "==> creating .venv with $($PYTHON --version)"
        "$PYTHON" -m venv "$ROOT/.venv" || {
            echo "could not create a virtual environment; on Debian: apt-get install python3-venv" >&2
            exit 1
        }
    fi
    # Reinstall when pyproject.toml changed since the last install with these extras.
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "==> installing iotgw[$1] into .venv"
        "$ROOT/.venv/bin/python" -m pip install --quiet --upgrade pip
        "$ROOT/.venv/bin/python" -m pip install --quiet -e "$ROOT[$1]"
        touch "$stamp"
    fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1
    fi
}

apt_updated=""
apt_install() {  # apt_install PACKAGE...
    command -v apt-get >/dev/null || { echo "apt-get not found: install $* by hand" >&2; return 1; }
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq && apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

have_mosquitto() {
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]
}

have_nginx() {
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]
}

have_postgres() {  # PostgreSQL 15 or newer from Debian's packages (initdb is not on PATH there)
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$initdb" ] || continue
        local version; version=$(basename "$(dirname "$(dirname "$initdb")")")
        [ "${version%%.*}" -ge 15 ] 2>/dev/null && return 0
    done
    return 1
}
