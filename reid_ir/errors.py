"""Every error reid_ir raises on purpose, in one place.

Two kinds reach the command line (``reid_ir.engine.run.main``):

* :data:`USER_ERRORS` come from the user's input (config, data on disk, output folder,
  checkpoint). They are reported in one log line and exit with code 2.
* :data:`DIVERGED_ERRORS` mean training diverged (NaN/inf loss or features): exit code 3,
  the last good checkpoint is kept.

Anything else is a bug and shows its traceback. Each class also derives from the built-in
error its callers caught before (``ValueError``, ``FileNotFoundError`` ...), so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class ReidIrError(Exception):
    """Base of every reid_ir error."""


class ConfigError(ReidIrError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad YAML, bad value)."""


class DataError(ReidIrError, ValueError):
    """The data on disk does not fit the config (empty split, unparsable image name, manifest)."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset, split folder or split manifest is not where the config says."""


class CorruptImageError(DataError):
    """An image file exists but cannot be decoded (truncated, corrupt, not an image)."""


class CheckpointError(ReidIrError, ValueError):
    """A checkpoint file is missing, truncated or not a reid_ir checkpoint."""


class OutputFolderError(ReidIrError, FileExistsError):
    """The output folder holds a previous run and we were not asked to resume it."""


class NonFiniteLossError(ReidIrError, FloatingPointError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


class NonFiniteFeaturesError(ReidIrError, ValueError):
    """The model produced NaN/inf embeddings, so there is nothing meaningful to evaluate."""


#: errors that come from user input: reported in one line, exit code 2
USER_ERRORS: tuple[type[ReidIrError], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    OutputFolderError,
)
#: training diverged: exit code 3
DIVERGED_ERRORS: tuple[type[ReidIrError], ...] = (NonFiniteLossError, NonFiniteFeaturesError)
