"""One convention for every entry point (``python -m BNN.train``, ``VAE.train``, ``CLUE.generate``, ...).

A :class:`common.errors.UserError` prints ``error: <message>`` and exits 2 (``--debug`` or ``CLUE_DEBUG=1``: the
traceback); Ctrl-C or SIGTERM exits 130 with one line; other exceptions are bugs (traceback, exit 1). Imported before
TensorFlow, it sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless set and drops :data:`STARTUP_NOISE` from the import's stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from common.errors import UserError

DEBUG_ENV = "CLUE_DEBUG"
EXIT_USER_ERROR = 2  # argparse's status for a bad command line
EXIT_INTERRUPTED = 130  # the shell's status for SIGINT

# What TensorFlow writes to stderr while it loads and finds its devices, below what a user needs to see.
STARTUP_NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called",
    r"cudart_stub\.cc.*Could not find cuda drivers",
    r"failed call to cuInit",
    r"oneDNN custom operations are on",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc.* already registered",
    r"TF-TRT Warning: Could not find TensorRT",
]))


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = STARTUP_NOISE) -> Iterator[None]:
    """Passes on what the block writes to file descriptor 2 (C++ included), minus lines matching ``noise``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not noise.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Import hook: runs the first ``import tensorflow`` and its device discovery inside :func:`filtered_stderr`."""

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname: str, path: Any, target: Any = None):
        if fullname != "tensorflow" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)  # what the other finders would import
        finally:
            self._finding = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def quiet_exec_module(module):
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            with filtered_stderr():
                exec_module(module)
                with contextlib.suppress(Exception):  # CUDA initialization logs here, e.g. cuInit on a CPU machine
                    module.config.list_physical_devices()

        loader.exec_module = quiet_exec_module
        return spec


def quiet_tensorflow_startup() -> None:
    """``TF_CPP_MIN_LOG_LEVEL=2`` unless set, and the import hook if TensorFlow is not imported yet; idempotent."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


quiet_tensorflow_startup()


def debugging() -> bool:
    """Whether ``CLUE_DEBUG`` asks for tracebacks (any value but empty, 0, false, no)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def setup_logging(level: int = logging.INFO) -> None:
    """The scripts' log format; absl (TensorFlow's checkpoint writer logs an INFO line per save) only from WARNING."""
    from common.runs import setup_logging as _setup

    _setup(level)
    logging.getLogger("absl").setLevel(logging.WARNING)


def interrupted_message(err: BaseException, resumable: bool) -> str:
    """``interrupted at epoch N (...); run the same command again to resume`` and the like."""
    if getattr(err, "epoch", None) is not None and str(err):
        return str(err)  # common.training.TrainingInterrupted says where it stopped
    return "interrupted" + ("; run the same command again to resume" if resumable else "")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while the block runs (main thread only): a killed run cleans up as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(body: Callable[[], Any], *, debug: bool = False, resumable: bool = False) -> NoReturn:
    """Runs ``body`` under the module's convention and exits with its return value if an int, else 0; ``debug`` (or
    ``CLUE_DEBUG=1``) re-raises a UserError or Ctrl-C; ``resumable``: the Ctrl-C message says rerunning resumes."""
    debug = debug or debugging()
    try:
        with _sigterm_as_interrupt():
            result = body()
    except UserError as err:
        if debug:
            raise
        sys.stdout.flush()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as err:
        if debug:
            raise
        sys.stdout.flush()
        print(interrupted_message(err, resumable), file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(result if type(result) is int else 0)


def add_common_flags(parser, overwrite: bool = True) -> None:
    """``--debug`` and, for scripts that write a run folder, ``--overwrite`` (see ``common.runs.make_run_dir``)."""
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace what --out holds when it is a run of another kind or with other settings "
                                 "(its files are deleted first), or write into a non-empty folder that holds no run "
                                 "(nothing there is deleted)")
    parser.add_argument("--debug", action="store_true", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")


def run_script(main: Callable[[Any], Any], config_cls: type, presets: Mapping[str, Mapping[str, Any]], *, prog: str,
               description: str = "", preset_help: Mapping[str, str] | None = None,
               argv: Sequence[str] | None = None, resumable: bool = False,
               log_level: int = logging.INFO) -> NoReturn:
    """The ``__main__`` of a script with a config dataclass: parses ``argv`` into ``config_cls`` (plus ``--overwrite``,
    ``--debug``), sets up logging and runs ``main(config)`` under :func:`run`; ``prog`` is the usage line's command."""
    from common.config import build_parser, config_from_args
    from common.runs import overwriting

    parser = build_parser(config_cls, presets, description, prog=prog, preset_descriptions=preset_help)
    add_common_flags(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(log_level)

    def body():
        config = config_from_args(config_cls, presets, args)  # a config's own checks may raise UserError
        with overwriting(args.overwrite):
            return main(config)

    run(body, debug=args.debug, resumable=resumable)
