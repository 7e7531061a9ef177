"""vLLM's log, kept in a file as well as on the terminal.

The EngineCore runs in a child process: when it fails to start, our process only
learns "Engine core initialization failed. See root cause above." The root cause
(how much memory was needed, the longest length that fits) is only in the child's
log. vLLM reads its logging config from VLLM_LOGGING_CONFIG_PATH in every process
it starts, so we hand it its own default config plus a file, and read the file
back when a load fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from app.files import private_dir, write_private

ENGINE_LOG = "engine.log"


def configure_engine_log(log_dir: Path) -> Path:
    """Make vLLM (this process and its children) also write to `log_dir/engine.log`.

    Must run before vLLM is imported; returns the log file's path.
    """
    private_dir(log_dir)
    log_file = log_dir / ENGINE_LOG
    if existing := os.environ.get("VLLM_LOGGING_CONFIG_PATH"):
        # Already configured (by the user, or earlier in this process): keep that config and
        # read the file it writes to, if any.
        return _file_of(Path(existing)) or log_file
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "vllm": {
                "()": "vllm.logging_utils.NewLineFormatter",
                "datefmt": "%m-%d %H:%M:%S",
                "format": "(%(vllm_process_name)s pid=%(process)d) %(levelname)s %(asctime)s "
                "[%(fileinfo)s:%(lineno)d] %(message)s",
            }
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "vllm",
                "level": os.environ.get("VLLM_LOGGING_LEVEL", "INFO"),
                "stream": "ext://sys.stdout",
            },
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
                "formatter": "vllm",
                "level": "INFO",
                "filename": str(log_file),
                "maxBytes": 5 * 2**20,
                "backupCount": 2,
                "encoding": "utf-8",
            },
        },
        "loggers": {
            "vllm": {
                "handlers": ["console", "file"],
                "level": os.environ.get("VLLM_LOGGING_LEVEL", "INFO"),
                "propagate": False,
            }
        },
    }
    config_file = log_dir / "vllm-logging.json"
    write_private(config_file, json.dumps(config, indent=2))
    # The handler opens the log with the process's umask: create it private first, since the
    # engine's log quotes prompts in its errors.
    os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(log_file, 0o600)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_file)
    return log_file


def _file_of(config_file: Path) -> Path | None:
    try:
        handlers = json.loads(config_file.read_text(encoding="utf-8")).get("handlers", {})
    except (OSError, ValueError, AttributeError):
        return None
    files = [h["filename"] for h in handlers.values() if isinstance(h, dict) and "filename" in h]
    return Path(files[0]) if files else None


def log_size(log_file: Path | None) -> int:
    try:
        return log_file.stat().st_size if log_file else 0
    except OSError:
        return 0


def read_since(log_file: Path | None, offset: int, limit: int = 200_000) -> str:
    """What was written to the log after `offset` (the log may have rotated meanwhile)."""
    if log_file is None:
        return ""
    try:
        with log_file.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(offset if offset <= size else 0)
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""
