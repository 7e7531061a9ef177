#!/usr/bin/env bash
# macOS: double-click in Finder to start vllm-chat (it opens in the browser; close this
# window to stop it).
#
# CPU only: macOS has no CUDA, so vLLM can use only the processor here, which is slow and
# fits small models only. vLLM also publishes no ready-made macOS package, so the install
# can fail; the message then says what to do instead.
cd "$(dirname "$0")" || exit 1
echo "vllm-chat on macOS: CPU only (no CUDA on Macs), slow, small models only."
echo "vllm-chat 在 macOS 上只能使用 CPU（Mac 没有 CUDA），速度慢，只适合小模型。"
status=0
VLLM_CHAT_DEVICE=cpu ./start.sh "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo
    echo "vllm-chat stopped with an error ($status). If vLLM could not be installed: vLLM has no"
    echo "macOS package. Run the app on a Linux or Windows (WSL2) PC with an NVIDIA GPU instead."
    echo "vllm-chat 出错退出（$status）。如果是 vLLM 无法安装：vLLM 没有 macOS 安装包，"
    echo "请改在带 NVIDIA 显卡的 Linux 或 Windows（WSL2）电脑上运行本应用。"
    read -r -p "Press Enter to close / 按回车键关闭 " _
fi
exit "$status"
