# vllm-chat for Windows: installs WSL2 and Ubuntu when missing, then sets the app up inside
# WSL, where wsl/setup.sh does the real work. Install.bat runs this script. Running it again
# is safe; after the restart that installing WSL may need, Windows runs it again by itself.
param([string]$Distro = $(if ($env:VLLM_CHAT_DISTRO) { $env:VLLM_CHAT_DISTRO } else { 'Ubuntu' }))

$zh = (Get-UICulture).Name -like 'zh*'
function Say([string]$En, [string]$Zh, [string]$Color = 'Gray') {
    if ($zh) { Write-Host $Zh -ForegroundColor $Color } else { Write-Host $En -ForegroundColor $Color }
}
function Stop-Install([string]$En, [string]$Zh) {
    Say $En $Zh 'Red'
    exit 1
}
function Test-Distro {
    & wsl.exe -d $Distro --exec true 2>$null | Out-Null
    return $LASTEXITCODE -eq 0
}

# wsl.exe writes UTF-16 unless told otherwise.
$env:WSL_UTF8 = '1'
$repo = Split-Path -Parent $PSScriptRoot
$state = Join-Path $env:LOCALAPPDATA 'vllm-chat'
$resumeKey = 'HKCU:\Software\Microsoft\Windows\CurrentVersion\RunOnce'

Say 'vllm-chat: installing into WSL2' 'vllm-chat：正在安装到 WSL2' 'Cyan'

# WSL2 with GPU support needs Windows 10 version 2004 (build 19041) or newer.
$build = [Environment]::OSVersion.Version.Build
if ($build -lt 19041) {
    Stop-Install "Windows build $build is too old for WSL2: update Windows 10 to version 2004 or newer, or use Windows 11." `
        "Windows 版本号 $build 太旧，不支持 WSL2：请把 Windows 10 更新到 2004 或更新版本，或使用 Windows 11。"
}

$hypervisor = (Get-CimInstance Win32_ComputerSystem).HypervisorPresent
$firmware = (Get-CimInstance Win32_Processor | Select-Object -First 1).VirtualizationFirmwareEnabled
if (-not $hypervisor -and -not $firmware) {
    Say 'Virtualization looks switched off: if WSL fails to start, turn on Intel VT-x or AMD SVM in the BIOS/UEFI settings.' `
        '虚拟化似乎未开启：如果 WSL 无法启动，请在 BIOS/UEFI 设置中开启 Intel VT-x 或 AMD SVM。' 'Yellow'
}

# WSL uses the Windows NVIDIA driver; no driver may be installed inside Linux.
$smi = Get-Command nvidia-smi.exe -ErrorAction SilentlyContinue
if ($smi) {
    & $smi.Source -L
} else {
    Say 'No NVIDIA driver found. For GPU speed, install the latest driver for your card from https://www.nvidia.com/drivers, then run Install.bat again. Without it the app runs on the CPU (slow).' `
        '未找到 NVIDIA 驱动。要用显卡加速，请从 https://www.nvidia.cn/drivers 安装适合您显卡的最新驱动，然后重新运行 Install.bat。没有驱动时应用将用 CPU 运行（很慢）。' 'Yellow'
}

if (-not (Test-Distro)) {
    $existing = @((& wsl.exe --list --quiet 2>$null) -replace "`0", '' | ForEach-Object { $_.Trim() } | Where-Object { $_ -like 'Ubuntu*' })
    if ($existing.Count -gt 0) {
        $Distro = $existing[0]
    } else {
        & wsl.exe --status 2>$null | Out-Null
        $wslReady = $LASTEXITCODE -eq 0
        $principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
        $admin = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
        Say "Installing WSL2 and $Distro (this can take a while; Ubuntu then asks for a new Linux user name and password)." `
            "正在安装 WSL2 和 $Distro（可能需要一些时间；之后 Ubuntu 会要求设置新的 Linux 用户名和密码）。" 'Cyan'
        if (-not $wslReady -and -not $admin) {
            # Turning the WSL feature on needs administrator rights.
            Start-Process wsl.exe -Verb RunAs -Wait -ArgumentList @('--install', '-d', $Distro)
        } else {
            & wsl.exe --install -d $Distro
        }
    }
}
if (-not (Test-Distro)) {
    Set-ItemProperty -Path $resumeKey -Name 'vllm-chat-install' -Value ('"' + (Join-Path $PSScriptRoot 'Install.bat') + '"')
    Say 'Please restart Windows to finish installing WSL. The installer continues by itself after you log in (or double-click Install.bat again).' `
        '请重启 Windows 以完成 WSL 的安装。登录后安装程序会自动继续（也可以再次双击 Install.bat）。' 'Yellow'
    exit 0
}
Remove-ItemProperty -Path $resumeKey -Name 'vllm-chat-install' -ErrorAction SilentlyContinue

# The GPU works only in WSL2, and a newer WSL kernel allows pinned memory.
$line = (& wsl.exe --list --verbose) -replace "`0", '' | Where-Object { ($_ -replace '^\*', '').Trim() -match "^$([regex]::Escape($Distro))\s" }
if ($line -match '\s1\s*$') {
    Say "Converting $Distro to WSL2 (needed for the GPU)..." "正在把 $Distro 转换为 WSL2（使用显卡需要）……" 'Cyan'
    & wsl.exe --set-version $Distro 2
}
& wsl.exe --update 2>$null | Out-Null

# Everything else happens inside Linux: copy the app to ~/vllm-chat, packages, vLLM.
$env:VLLM_CHAT_LANG = if ($zh) { 'zh-CN' } else { 'en' }
$env:WSLENV = (@($env:WSLENV, 'VLLM_CHAT_LANG/u') | Where-Object { $_ }) -join ':'
& wsl.exe -d $Distro --cd $repo --exec bash wsl/setup.sh
if ($LASTEXITCODE -ne 0) {
    Stop-Install 'The setup inside WSL failed (see the messages above). Fix what they say and run Install.bat again.' `
        'WSL 内的安装失败（见上面的信息）。请按提示处理后重新运行 Install.bat。'
}

# Start/Stop live in %LOCALAPPDATA%\vllm-chat, so this download folder may be deleted afterwards.
New-Item -ItemType Directory -Force -Path $state | Out-Null
Set-Content -Path (Join-Path $state 'distro.txt') -Value $Distro -Encoding Ascii
foreach ($file in @('Start.bat', 'Stop.bat', 'watch.ps1')) {
    Copy-Item -Force -Path (Join-Path $PSScriptRoot $file) -Destination $state
}
Copy-Item -Force -Path (Join-Path $repo 'assets\icon.ico') -Destination $state
$desktop = [Environment]::GetFolderPath('Desktop')
$shortcut = (New-Object -ComObject WScript.Shell).CreateShortcut((Join-Path $desktop 'vllm-chat.lnk'))
$shortcut.TargetPath = Join-Path $state 'Start.bat'
$shortcut.WorkingDirectory = $state
$shortcut.IconLocation = Join-Path $state 'icon.ico'
$shortcut.Description = 'vllm-chat'
$shortcut.Save()

Say 'Done. Double-click "vllm-chat" on the desktop to start; it opens http://localhost:7860 in your browser. Closing its window stops the app.' `
    '完成。双击桌面上的“vllm-chat”即可启动，浏览器会打开 http://localhost:7860。关闭其窗口即可停止应用。' 'Green'
