"""Every error a user can fix, in one module that imports nothing of fitnas.

Stages turn these into one clear line and exit status 1 (`fitnas.pipeline.friendly_errors`).
Keeping them here, not beside the code that raises them, lets `pipeline` catch them all without
importing (and so depending on) every module of the package.
"""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """params.yaml is missing or does not match the schema; the message names the key and the fix."""


class CodeError(RuntimeError):
    """The fitnas that runs is not this checkout's code, which DVC hashes."""


class DataError(ValueError):
    """The data is missing or malformed; the message says how to fix it."""


class ArchError(ValueError):
    """An architecture string that does not parse; the message shows the expected form."""


class BudgetError(ValueError):
    """No architecture meets the budget; the message gives the smallest costs available."""


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or of another space or shape; the message says how to rebuild it."""


class SamplesError(ValueError):
    """A table a stage reads (samples, lookup, choice) is missing or malformed."""


class LatencyTableError(ValueError):
    """The latency table is missing or does not fit the space; the message says how to rebuild it."""


class PredictError(ValueError):
    """`fitnas predict` cannot classify an input (not an image, wrong channels) or load the model; one line says why."""


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message names the URI and the way around it."""


class DeviceError(RuntimeError):
    """The device params.yaml asks for is not there; stages report it without a traceback."""


class DistributedError(RuntimeError):
    """The launch does not match the settings; the message says which to change."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class Interrupted(RuntimeError):
    """SIGTERM or SIGINT stopped training at a step boundary; `steps` steps of the epoch were applied."""

    def __init__(self, signum: int, steps: int, desc: str):
        self.signum, self.steps = signum, steps
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: {desc} stopped after {steps} steps")
        self.exit_code = 128 + signum  # what a shell reports for a process killed by the signal


USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    CodeError,
    DataError,
    BudgetError,
    ArchError,
    CheckpointError,
    SamplesError,
    TrackingError,
    DeviceError,
    NonFiniteLoss,
    DistributedError,
    LatencyTableError,
    PredictError,
)
