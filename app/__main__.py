"""Command line: `python -m app [serve flags]`, `python -m app download REPO`, `python -m app doctor`.

Engine flags are named as `vllm serve` names them, so users can type what they know.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.config.access import Access
from app.config.file import read_settings
from app.config.settings import PRESETS, AppPaths, AppSettings, apply_preset
from app.engine.fields import add_engine_flags, engine_flag_values
from app.files import private_umask

if TYPE_CHECKING:
    from app.engine.remote import RemoteEngine

# Other commands live in app/commands/<name>.py, each with `main(argv) -> int`.
SUBCOMMANDS = ("download", "doctor")


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm-chat", description="A local chat app running vLLM on your GPU.")
    p.add_argument("--model", help="model to load at start: a Hugging Face id or a local folder")
    p.add_argument("--preset", choices=sorted(PRESETS), help="engine preset (default: the saved one)")
    add_engine_flags(p)
    p.add_argument(
        "--fit-max-tokens",
        dest="api_fit_max_tokens",
        action="store_true",
        default=None,
        help="on /v1, lower a max_tokens longer than the model's context to fit instead of refusing it "
        "(for agents that always ask 32000; vllm serve refuses)",
    )
    p.add_argument(
        "--max-loaded-models",
        type=int,
        help="most models loaded at once (default: the saved setting; 0: as many as fit in memory)",
    )
    p.add_argument(
        "--idle-unload-minutes",
        type=float,
        help="unload a model no request used for this long (default: the saved setting, 60; 0: never)",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument("--no-browser", action="store_true", help="do not open the browser")
    p.add_argument("--api-key", help="require this key (Authorization: Bearer KEY) on /v1 and /api")
    p.add_argument("--auth", help="UI login as USER:PASSWORD (needed with a non-loopback --host)")
    p.add_argument(
        "--allowed-origins",
        help="comma-separated web origins that may call /v1 and /api from a browser (default: none)",
    )
    p.add_argument(
        "--allowed-hosts",
        help="comma-separated extra host names the app answers to, e.g. my-pc.local (default: "
        "localhost, 127.0.0.1, [::1] and the --host address)",
    )
    p.add_argument(
        "--allowed-media-domains",
        nargs="+",
        metavar="DOMAIN",
        help="as for vllm serve: media URLs in requests may come only from these host names (default: any "
        "public host; never this computer or its network)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "remote"),
        default="local",
        help="local: vLLM in this process; remote: an OpenAI-compatible server at --base-url",
    )
    p.add_argument("--base-url", help="remote engine URL, e.g. http://gpu-box:8000/v1")
    p.add_argument("--remote-api-key", help="API key of the remote engine")
    return p


def settings_from_args(args: argparse.Namespace, saved: AppSettings) -> AppSettings:
    """Saved settings with this run's flags on top."""
    engine = apply_preset(args.preset, saved.engine) if args.preset else saved.engine
    engine = dataclasses.replace(engine, **engine_flag_values(args))
    fit = saved.api_fit_max_tokens if args.api_fit_max_tokens is None else args.api_fit_max_tokens
    pool = {k: getattr(args, k) for k in ("max_loaded_models", "idle_unload_minutes") if getattr(args, k) is not None}
    settings = dataclasses.replace(
        saved, engine=engine, preset=args.preset or saved.preset, api_fit_max_tokens=fit, **pool
    )
    settings.validate()
    return settings


def access_from_args(args: argparse.Namespace) -> Access:
    return Access.from_flags(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        auth=args.auth,
        allowed_origins=args.allowed_origins,
        allowed_hosts=args.allowed_hosts,
        allowed_media_domains=args.allowed_media_domains,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything this process and its children write (settings, history, logs, exports, Gradio's
    # uploads) is for this user alone.
    private_umask()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(f"app.commands.{argv[0]}")
        return module.main(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    args = serve_parser().parse_args(argv)
    from app.errors import UserError

    paths = AppPaths.default()
    loaded = read_settings(paths)
    if loaded.bad_fields:
        print(f"{loaded.message('en')}\n{loaded.message('zh-CN')}", file=sys.stderr)
    try:
        settings = settings_from_args(args, loaded.settings)
        access = access_from_args(args)
    except UserError as exc:
        print(f"{exc.message('en')}\n{exc.message('zh-CN')}", file=sys.stderr)
        return 2
    if settings.engine.trust_remote_code:
        print(
            "WARNING: --trust-remote-code runs Python code shipped with the model. Use it only for models "
            "whose authors you trust.\n警告：--trust-remote-code 会运行模型附带的 Python 代码，仅对可信的模型使用。",
            file=sys.stderr,
        )
    from app.application import App
    from app.server import serve

    engine, autoload = None, args.model
    if args.engine == "remote":
        if not args.base_url:
            print(
                "--engine remote needs --base-url URL (e.g. http://gpu-box:8000/v1).\n"
                "--engine remote 需要 --base-url 地址（例如 http://gpu-box:8000/v1）。",
                file=sys.stderr,
            )
            return 2
        # In remote mode --model picks one of the server's models; nothing loads here.
        engine, autoload = connect_remote(args.base_url, args.remote_api_key, args.model), None
    app = App.build(settings, paths, engine=engine, access=access)
    serve(app, autoload=autoload, open_browser=not args.no_browser)
    return 0


def connect_remote(base_url: str, api_key: str | None, model: str | None) -> RemoteEngine:
    """The remote engine, checked once at start so the terminal says at once if it is unreachable.
    The app starts either way: the server may come up later."""
    from app.engine.remote import RemoteEngine
    from app.errors import UserError

    engine = RemoteEngine(base_url, api_key=api_key, model=model)
    try:
        models = asyncio.run(engine.refresh())
        print(f"vllm-chat: remote engine {base_url}: {', '.join(models)} (using {engine.model_name})", flush=True)
    except UserError as exc:
        print(f"{exc.message('en')}\n{exc.message('zh-CN')}", file=sys.stderr)
    return engine


if __name__ == "__main__":
    sys.exit(main())
