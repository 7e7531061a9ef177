@echo off
rem Double-click: starts vllm-chat inside WSL and opens http://localhost:7860 once it answers.
rem Closing this window stops the app and frees the GPU; Stop.bat does the same if the window was lost.
setlocal
set "DISTRO=Ubuntu"
if exist "%LOCALAPPDATA%\vllm-chat\distro.txt" set /p DISTRO=<"%LOCALAPPDATA%\vllm-chat\distro.txt"
if defined VLLM_CHAT_DISTRO set "DISTRO=%VLLM_CHAT_DISTRO%"
title vllm-chat
start "" /min powershell.exe -NoProfile -ExecutionPolicy Bypass -WindowStyle Hidden -File "%~dp0watch.ps1" -Distro "%DISTRO%"
wsl.exe -d "%DISTRO%" --exec bash -c "exec ~/vllm-chat/start.sh --no-browser"
rem Keep the window open when the app failed, so its message can be read.
if errorlevel 1 pause
