"""``pixelsplat-ns``: the project's command-line tools."""

from __future__ import annotations

import warnings

# Deprecation notices nerfstudio 1.1.5's imports print on every command with a recent torch; they
# concern nerfstudio's code, not the user's run, so they are hidden before anything imports it.
for _message in (
    r"`torch\.jit\.script` is deprecated",
    r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated",
):
    warnings.filterwarnings("ignore", message=_message, category=FutureWarning)

import tyro  # noqa: E402

from pixelsplat_ns.cli.convert import Convert  # noqa: E402
from pixelsplat_ns.cli.demo import Demo  # noqa: E402
from pixelsplat_ns.cli.evaluate import Evaluate  # noqa: E402
from pixelsplat_ns.cli.explain import Explain  # noqa: E402
from pixelsplat_ns.cli.photos import Photos  # noqa: E402
from pixelsplat_ns.cli.synthesize import Synthesize  # noqa: E402

COMMANDS = {
    "demo": Demo,
    "convert": Convert,
    "evaluate": Evaluate,
    "explain": Explain,
    "photos": Photos,
    "synthesize": Synthesize,
}


def entrypoint() -> None:
    tyro.extras.subcommand_cli_from_dict(COMMANDS).main()


if __name__ == "__main__":
    entrypoint()
