@echo off
rem Double-click to install vllm-chat on Windows: WSL2 and Ubuntu when missing, then the app inside WSL.
rem Safe to run again: after the restart WSL may ask for, to repair, or to update the app from this folder.
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dp0install.ps1"
echo.
pause
