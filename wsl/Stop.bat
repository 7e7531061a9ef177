@echo off
rem Stops vllm-chat inside WSL and frees the GPU, for when the Start.bat window was lost.
setlocal
set "DISTRO=Ubuntu"
if exist "%LOCALAPPDATA%\vllm-chat\distro.txt" set /p DISTRO=<"%LOCALAPPDATA%\vllm-chat\distro.txt"
if defined VLLM_CHAT_DISTRO set "DISTRO=%VLLM_CHAT_DISTRO%"
wsl.exe -d "%DISTRO%" --exec bash -c "~/vllm-chat/start.sh --stop"
timeout /t 5
