#!/usr/bin/env bash
# Sets vllm-chat up inside WSL2. wsl\Install.bat runs it; running it again is safe.
#
#   wsl/setup.sh [--check] [--model DIR]
#
#   --check      say what would be done, and what is wrong; change nothing
#   --model DIR  also check this model folder against WSL's memory limit and location
#
# 1. Copies the app into the Linux file system (~/vllm-chat) when it sits on a Windows
#    drive: files under /mnt/c load many times slower.
# 2. Checks the NVIDIA driver Windows shares with WSL (/usr/lib/wsl/lib/libcuda.so*, nvidia-smi).
# 3. Installs the Ubuntu packages vLLM needs (Python venv and headers, a C compiler).
# 4. Compares WSL's memory limit (%UserProfile%\.wslconfig) with the model's weights.
# 5. Turns on pinned memory (VLLM_WSL2_ENABLE_PIN_MEMORY=1) where the kernel supports it.
# 6. Runs ./start.sh --install-only.
#
# Messages follow VLLM_CHAT_LANG (Install.bat passes the Windows language), else LANG.
# VLLM_CHAT_FAKE_ROOT prefixes the system paths looked at (tests use a fake root).
set -euo pipefail

args=("$@")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${VLLM_CHAT_FAKE_ROOT:-}"
target="${VLLM_CHAT_WSL_DIR:-$HOME/vllm-chat}"
check_only=0
model=""
# Weights of a 7-8B model in 16 bits: what most people load first.
typical_gib=16
warnings=0

case "${VLLM_CHAT_LANG:-${LC_ALL:-${LANG:-}}}" in
    zh*) zh=1 ;;
    *) zh=0 ;;
esac

# t "English" "中文": the sentence in the user's language.
t() { if [ "$zh" = 1 ]; then printf '%s' "$2"; else printf '%s' "$1"; fi; }
note() { printf '[vllm-chat setup] %s\n' "$(t "$1" "$2")" >&2; }
warn() {
    warnings=$((warnings + 1))
    printf '[vllm-chat setup] %s%s\n' "$(t "WARNING: " "警告：")" "$(t "$1" "$2")" >&2
}
fail() {
    printf '[vllm-chat setup] %s\n' "$(t "$1" "$2")" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --check) check_only=1 ;;
        --model)
            [ $# -ge 2 ] || fail "--model needs a folder" "--model 需要一个文件夹"
            model="$(realpath -m "$2")"
            shift
            ;;
        -h | --help)
            sed -n '2,19p' "$0"
            exit 0
            ;;
        *) fail "unknown option: $1 (see --help)" "未知选项：$1（见 --help）" ;;
    esac
    shift
done

on_windows_drive() {
    # A path on a Windows drive as WSL mounts it (/mnt/c/...), the fake root removed.
    local path="${1#"$root"}"
    [[ "$path" =~ ^/mnt/[a-zA-Z](/|$) ]]
}

windows_path() {
    # /mnt/c/Users/me/.wslconfig -> C:\Users\me\.wslconfig, for instructions a Windows user follows.
    local path="${1#"$root"}"
    local drive="${path:5:1}"
    local rest="${path:6}"
    printf '%s:%s\n' "${drive^^}" "${rest//\//\\}"
}

copy_into_linux() {
    if [ "$check_only" = 1 ]; then
        warn "the app is on a Windows drive ($here): setup would copy it to $target" \
            "应用位于 Windows 磁盘（$here）：安装时会复制到 $target"
        return 0
    fi
    note "copying the app into the Linux file system: $target (files on /mnt/c load many times slower)" \
        "正在把应用复制到 Linux 文件系统：$target（/mnt/c 上的文件加载要慢很多倍）"
    mkdir -p "$target"
    tar -C "$here" --exclude=.venv --exclude=__pycache__ -cf - . | tar -C "$target" -xf -
    # A Windows checkout may have CRLF line ends, which bash cannot run.
    find "$target" -maxdepth 2 \( -name '*.sh' -o -name '*.command' \) -exec sed -i 's/\r$//' {} +
    chmod +x "$target/start.sh" "$target/wsl/setup.sh"
    exec bash "$target/wsl/setup.sh" "${args[@]}"
}

if on_windows_drive "$here"; then
    copy_into_linux
fi

# The install logic and its helpers (detect_device, config_dir, is_wsl, find_nvidia_smi).
# shellcheck source=start.sh
source "$here/start.sh"

check_wsl() {
    if ! is_wsl; then
        warn "this is not WSL: on Linux, ./start.sh alone is enough" "这里不是 WSL：在 Linux 上直接运行 ./start.sh 即可"
    fi
}

check_gpu() {
    local libcuda=0
    if compgen -G "$root/usr/lib/wsl/lib/libcuda.so*" >/dev/null; then libcuda=1; fi
    device="$(detect_device)"
    if [ "$device" = gpu ] && [ "$libcuda" = 1 ]; then
        note "the Windows NVIDIA driver is shared with WSL: installing the GPU build of vLLM" \
            "Windows 的 NVIDIA 驱动已共享给 WSL：将安装 vLLM 显卡版"
    elif [ "$device" = gpu ]; then
        if is_wsl; then
            warn "nvidia-smi lists a GPU, but $root/usr/lib/wsl/lib/libcuda.so is missing: update the NVIDIA driver on Windows, run 'wsl --shutdown' and run Install.bat again" \
                "nvidia-smi 能看到显卡，但缺少 $root/usr/lib/wsl/lib/libcuda.so：请在 Windows 上更新 NVIDIA 驱动，运行 'wsl --shutdown'，再运行 Install.bat"
        fi
    else
        warn "no NVIDIA GPU is visible in WSL: installing the CPU build (slow, small models only). If this PC has an NVIDIA GPU, install its driver on Windows (never inside WSL), run 'wsl --shutdown' and run Install.bat again" \
            "WSL 中看不到 NVIDIA 显卡：将安装 CPU 版（速度慢，只适合小模型）。如果这台电脑有 NVIDIA 显卡，请在 Windows 上安装驱动（切勿在 WSL 内安装），运行 'wsl --shutdown'，再运行 Install.bat"
    fi
}

missing_packages() {
    # Python 3.11+ with venv and headers (Triton compiles a helper against them), and a compiler.
    local wanted=(python3-venv python3-dev build-essential) pkg python
    local have_python=0
    for python in "${VLLM_CHAT_PYTHON:-}" python3.12 python3.11 python3; do
        [ -n "$python" ] || continue
        if command -v "$python" >/dev/null 2>&1 &&
            "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            have_python=1
            break
        fi
    done
    # Ubuntu 22.04's python3 is 3.10; its 3.11 comes as separate packages.
    if [ "$have_python" = 0 ]; then wanted+=(python3.11 python3.11-venv python3.11-dev); fi
    local query=(dpkg-query)
    if [ -n "$root" ]; then query+=("--admindir=$root/var/lib/dpkg"); fi
    for pkg in "${wanted[@]}"; do
        # shellcheck disable=SC2016  # ${Status} is dpkg-query's field, not ours
        if ! "${query[@]}" -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$pkg"
        fi
    done
}

install_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        note "not Debian or Ubuntu: make sure Python 3.11+ with venv and a C compiler are installed" \
            "不是 Debian 或 Ubuntu：请确认已安装 Python 3.11+（含 venv）和 C 编译器"
        return 0
    fi
    local missing=() pkg
    while IFS= read -r pkg; do missing+=("$pkg"); done < <(missing_packages)
    [ "${#missing[@]}" -gt 0 ] || return 0
    if [ "$check_only" = 1 ]; then
        warn "missing Ubuntu packages: ${missing[*]} (setup installs them)" "缺少 Ubuntu 软件包：${missing[*]}（安装时会自动安装）"
        return 0
    fi
    note "installing Ubuntu packages: ${missing[*]} (asks for your Linux password)" \
        "正在安装 Ubuntu 软件包：${missing[*]}（会要求输入 Linux 密码）"
    local sudo=()
    if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
    if ! { "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q "${missing[@]}"; }; then
        fail "could not install ${missing[*]}: run 'sudo apt-get install ${missing[*]}' and this script again" \
            "无法安装 ${missing[*]}：请运行 'sudo apt-get install ${missing[*]}'，然后再运行本脚本"
    fi
}

find_wslconfig() {
    # %UserProfile%\.wslconfig: the one of the Windows user named like this Linux user, else the only one.
    local found=() path
    for path in "$root"/mnt/c/Users/*/.wslconfig; do
        [ -f "$path" ] && found+=("$path")
    done
    for path in "${found[@]}"; do
        local owner="${path%/.wslconfig}" user="${USER:-}"
        owner="${owner##*/}"
        if [ "${owner,,}" = "${user,,}" ]; then
            printf '%s\n' "$path"
            return 0
        fi
    done
    if [ "${#found[@]}" = 1 ]; then printf '%s\n' "${found[0]}"; fi
}

check_memory() {
    local mem_kib need_gib label
    mem_kib="$(awk '/^MemTotal:/ {print $2}' "$root/proc/meminfo" 2>/dev/null || true)"
    [ -n "$mem_kib" ] || return 0
    if [ -n "$model" ] && [ -d "$root$model" ]; then
        # Whole GiB, rounded up, computed in awk: byte sums overflow its integer printing.
        need_gib="$(find "$root$model" -maxdepth 1 -name '*.safetensors' -printf '%s\n' |
            awk '{s += $1} END {g = s / 1073741824; n = int(g); if (n < g) n++; print n}')"
        label="$(t "the weights of $model" "$model 的权重")"
    fi
    if [ -z "${need_gib:-}" ] || [ "$need_gib" = 0 ]; then
        need_gib="$typical_gib"
        label="$(t "a typical 7-8B model's weights" "常见 7–8B 模型的权重")"
    fi
    local mem_gib
    mem_gib="$(awk -v k="$mem_kib" 'BEGIN {printf "%.1f", k / 1048576}')"
    [ "$((mem_kib * 1024))" -lt "$((need_gib * 1073741824))" ] || return 0
    local config current=""
    config="$(find_wslconfig)"
    if [ -n "$config" ]; then
        current="$(awk -F= 'tolower($0) ~ /^\[/ {s = tolower($0)} s == "[wsl2]" && tolower($1) ~ /^ *memory *$/ {print $2}' "$config" | tr -d ' \r')"
        config="$(windows_path "$config")"
    else
        config='%UserProfile%\.wslconfig'
    fi
    local suggest=$((need_gib + 4))
    warn "WSL may use ${mem_gib} GiB of RAM${current:+ (memory=$current)}, less than ${label} (${need_gib} GiB): loading may be killed. In Windows, put 'memory=${suggest}GB' under [wsl2] in $config (if the PC has that much RAM), then run 'wsl --shutdown'" \
        "WSL 最多可用 ${mem_gib} GiB 内存${current:+（memory=$current）}，少于${label}（${need_gib} GiB）：加载时可能被终止。请在 Windows 中，于 $config 的 [wsl2] 下写入 'memory=${suggest}GB'（如果电脑内存足够），然后运行 'wsl --shutdown'"
}

check_locations() {
    local name path
    for name in model HF_HOME HF_HUB_CACHE; do
        if [ "$name" = model ]; then path="$model"; else path="${!name:-}"; fi
        [ -n "$path" ] || continue
        if on_windows_drive "$(realpath -m "$path")"; then
            warn "$name=$path is on a Windows drive: models load many times slower from /mnt/c than from the Linux disk. Keep models inside WSL (for example ~/models or ~/.cache/huggingface)" \
                "$name=$path 位于 Windows 磁盘：从 /mnt/c 加载模型比从 Linux 磁盘慢很多倍。请把模型放在 WSL 内（例如 ~/models 或 ~/.cache/huggingface）"
        fi
    done
}

set_pin_memory() {
    # Only the CUDA platform pins memory.
    is_wsl && [ "$device" = gpu ] || return 0
    local kernel file
    kernel="$(awk '{print $3}' "$root/proc/version")"
    kernel="${kernel%%-*}"
    # vLLM's own test: pinned memory works on WSL2 kernels from 4.19.121.
    if [ "$(printf '%s\n' 4.19.121 "$kernel" | sort -V | head -n 1)" != 4.19.121 ]; then
        warn "the WSL kernel $kernel is older than 4.19.121, so vLLM runs without pinned memory (slower): run 'wsl --update' in Windows" \
            "WSL 内核 $kernel 早于 4.19.121，vLLM 只能不用锁页内存运行（较慢）：请在 Windows 中运行 'wsl --update'"
        return 0
    fi
    file="$(config_dir)/environment"
    if [ "$check_only" = 1 ]; then
        note "would turn on pinned memory (VLLM_WSL2_ENABLE_PIN_MEMORY=1 in $file)" \
            "将开启锁页内存（在 $file 中写入 VLLM_WSL2_ENABLE_PIN_MEMORY=1）"
        return 0
    fi
    mkdir -p "$(dirname "$file")"
    { grep -v '^VLLM_WSL2_ENABLE_PIN_MEMORY=' "$file" 2>/dev/null || true; } >"$file.tmp"
    printf 'VLLM_WSL2_ENABLE_PIN_MEMORY=1\n' >>"$file.tmp"
    mv "$file.tmp" "$file"
    note "pinned memory on: VLLM_WSL2_ENABLE_PIN_MEMORY=1 in $file (start.sh reads it)" \
        "已开启锁页内存：VLLM_WSL2_ENABLE_PIN_MEMORY=1 写入 $file（start.sh 会读取）"
}

setup_main() {
    local device
    check_wsl
    check_gpu
    install_packages
    check_memory
    check_locations
    set_pin_memory
    if [ "$check_only" = 1 ]; then
        printf 'device=%s\nwarnings=%s\n' "$device" "$warnings"
        return 0
    fi
    "$here/start.sh" --install-only
    note "done ($warnings warning(s) above). Start the app: double-click Start.bat in Windows, or run $here/start.sh" \
        "完成（上面有 $warnings 条警告）。启动应用：在 Windows 中双击 Start.bat，或运行 $here/start.sh"
}

setup_main
