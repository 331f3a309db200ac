"""Errors that mean "the input is unusable" (reported as one clear line by the CLI glue)."""


class PixelSplatInputError(ValueError):
    """Bad input: too few views, identical or non-finite cameras, unusable images, ..."""
