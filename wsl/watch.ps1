# Started hidden by Start.bat: opens the browser once the app answers, and stops the app
# (freeing the GPU) when the Start.bat window is closed.
param([string]$Distro = 'Ubuntu', [int]$Port = 7860)

$startBat = (Get-CimInstance Win32_Process -Filter "ProcessId=$PID").ParentProcessId
$url = "http://localhost:$Port"
# The first start installs for several minutes: wait up to an hour.
$deadline = (Get-Date).AddHours(1)
while ((Get-Date) -lt $deadline -and (Get-Process -Id $startBat -ErrorAction SilentlyContinue)) {
    try {
        Invoke-WebRequest -Uri "$url/healthz" -UseBasicParsing -TimeoutSec 3 | Out-Null
        Start-Process $url
        break
    } catch {
        Start-Sleep -Seconds 2
    }
}
Wait-Process -Id $startBat -ErrorAction SilentlyContinue
& wsl.exe -d $Distro --exec bash -c '~/vllm-chat/start.sh --stop'
