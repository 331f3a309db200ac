"""Errors that mean "the input is unusable" or "the output cannot be written" (each reported as
one clear line by the CLI glue)."""


class PixelSplatInputError(ValueError):
    """Bad input: too few views, identical or non-finite cameras, unusable images, ..."""


class PixelSplatOutputError(OSError):
    """A file could not be written (full disk, read-only folder, ...): the message names the
    file and the reason; the previous version of the file, if any, is left whole."""
