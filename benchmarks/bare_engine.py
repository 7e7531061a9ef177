"""Child process of the cold-start measurement: build a bare AsyncLLM from `vllm serve` flags,
say so, and shut down. `python -m benchmarks.bare_engine --model DIR [vllm serve flags]`"""

from __future__ import annotations

import sys

# Printed when the engine is built; nothing but vLLM is imported before it.
BARE_READY = "BARE ENGINE READY"


def main(argv: list[str]) -> int:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.v1.engine.async_llm import AsyncLLM

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs.from_cli_args(parser.parse_args(argv)))
    print(BARE_READY, flush=True)
    llm.shutdown()
    return 0


# vLLM starts its engine process with "spawn" on CPU: the entry module must be import-safe.
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
