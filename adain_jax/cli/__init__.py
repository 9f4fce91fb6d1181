"""The command lines: stylize, train, convert_weights and `python -m adain_jax.evaluate`.

Each is a module here with `main(argv) -> exit status` and `run()`, the console script
(`adain-stylize`, `adain-train`, `adain-convert`, `adain-evaluate`); the scripts at the top
of a checkout call the same `main`. What they share lives in this file: one-line usage
errors, --version, Ctrl-C at any moment as one line and exit 130, and logging that shows
our own lines without JAX's start-up chatter. Nothing here imports JAX, so --help and
--version answer at once; each command imports the library after parsing its arguments.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from typing import Callable, Sequence

from adain_jax import __version__, _malloc

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with --version whose usage errors are one line and exit status 1."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version",
                          version=f"%(prog)s (adain-jax {__version__})")

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged, not when it was made
    (a handler bound to a replaced stderr, e.g. a closed test capture, fails to log)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def whole_number(minimum: int, what: str = ""):
    """An argparse type: a whole number (of `what`), at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            of = f" of {what}" if what else ""
            raise argparse.ArgumentTypeError(
                f"expected a whole number{of}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """--no-compile-cache and -v/--verbose, for the commands that compile programs."""
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not keep compiled programs for later runs (default: kept in "
                             "$ADAIN_JAX_COMPILE_CACHE or ~/.cache/adain_jax/xla, so a run "
                             "with image sizes seen before starts faster)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also log details: what was compiled or loaded from the "
                             "compilation cache (default: off)")


def start_compile_cache(args: argparse.Namespace):
    """JAX's persistent compilation cache unless --no-compile-cache (see compile_cache).
    Call it before anything compiles: JAX decides once per process whether to use it."""
    if args.no_compile_cache:
        return None
    from adain_jax import compile_cache

    return compile_cache.enable()


def setup_logging(quiet: bool, verbose: bool = False) -> None:
    """Our INFO lines on stderr as bare messages; other libraries' at WARNING and above.

    JAX logs backend probing at INFO (e.g. "Unable to initialize backend 'tpu'"), which a
    root logger at INFO would print on every CPU-only start. A console handler some import
    put on the root logger first (absl's first log line adds Python's default one, with
    "INFO:name:" prefixes) is replaced, so each line is printed once and plainly; handlers
    that write elsewhere (a file, a test's capture) are kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and (
                handler.stream in (sys.stderr, sys.__stderr__)
                or getattr(handler.stream, "closed", False)):
            root.removeHandler(handler)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for chatty in ("absl", "jax"):  # Orbax logs every checkpoint step at INFO through absl
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # set, not inherited: an earlier quiet command in the same process may have lowered it
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.getLogger("adain_jax").setLevel(level)
    # `python -m adain_jax.style_bank` (and the other -m commands) runs its module as
    # __main__, so its getLogger(__name__) lines are not under "adain_jax".
    logging.getLogger("__main__").setLevel(level)


def run_main(main: Callable[[Sequence[str] | None], int], prog: str,
             argv: Sequence[str] | None = None) -> int:
    """main(argv), with Ctrl-C at any moment as one line and exit status 130.

    Until the command calls `work_starts`, Ctrl-C exits at once from the signal handler:
    raised as KeyboardInterrupt it can land in JAX's garbage-collection callback while
    modules import, where Python prints and then ignores it. From `work_starts` on the
    command handles KeyboardInterrupt itself, to keep what it finished; one that escapes
    ends here. Either way the process leaves without the interpreter's shutdown: a Ctrl-C
    that lands while XLA compiles leaves the compilation running in a JAX thread, and
    shutdown frees the runtime under it (a segfault, exit 139). First of all, glibc is told
    to keep freed memory (`_malloc.keep_freed_memory`).
    """
    _malloc.keep_freed_memory()  # before JAX starts its threads (see adain_jax/_malloc.py)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored
        signal.signal(signal.SIGINT, functools.partial(_exit_now, prog))
    try:
        return main(argv)
    except KeyboardInterrupt:
        _exit_now(prog)


def work_starts() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt again (see `run_main`)."""
    handler = signal.getsignal(signal.SIGINT)
    if getattr(handler, "func", None) is _exit_now:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _exit_now(prog: str, *signal_args) -> None:
    print(f"\n{prog}: interrupted", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)
