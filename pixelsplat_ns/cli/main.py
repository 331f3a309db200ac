"""``pixelsplat-ns``: the project's command-line tools."""

from __future__ import annotations

import tyro

from pixelsplat_ns.cli.convert import Convert
from pixelsplat_ns.cli.demo import Demo
from pixelsplat_ns.cli.evaluate import Evaluate
from pixelsplat_ns.cli.synthesize import Synthesize

COMMANDS = {"demo": Demo, "convert": Convert, "evaluate": Evaluate, "synthesize": Synthesize}


def entrypoint() -> None:
    tyro.extras.subcommand_cli_from_dict(COMMANDS).main()


if __name__ == "__main__":
    entrypoint()
