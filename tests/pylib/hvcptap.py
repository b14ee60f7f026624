# SPDX-License-Identifier: GPL-2.0-or-later
"""TAP output of the project's Python tests and scripts.

The plan is counted, never written by hand: it is printed at the end
("1..N" after the test points, which TAP allows), by done() or on
leaving a `with Tap() as tap:` block.

    tap = Tap()                     # independent checks
    tap.ok(cond, 'what holds', diag)            # a condition
    value = tap.check('what works', func, *args)  # func raises on failure
    sys.exit(tap.done())

Tap(dependent=True): the checks build on each other, so once one fails
the rest are reported as failed ("not run") without being run.

check() reports an exception as "not ok" with its traceback as comments,
Skip as "ok # SKIP reason", and otherwise "ok" with the time it took.
"""

import contextlib
import os
import shutil
import tempfile
import time
import traceback


class Skip(Exception):
    """A check that cannot run here (TAP "# SKIP" with the reason)."""


def out(line=''):
    print(line, flush=True)


def note(msg):
    """msg as TAP comment lines."""
    for line in str(msg).splitlines() or ['']:
        out(f'# {line}')


@contextlib.contextmanager
def scratch_dir(prefix, failed):
    """A fresh folder /tmp/<prefix>XXXXXXXX (its real path) for a test's
    files.  On leaving it is removed, unless failed() says a check
    failed: then it is kept, and named, for a look at what went wrong."""
    workdir = os.path.realpath(tempfile.mkdtemp(prefix=prefix, dir='/tmp'))
    try:
        yield workdir
    finally:
        if failed():
            note(f'files kept in {workdir}')
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def skip_all(reason):
    """The plan of a test that cannot run here; returns its exit code."""
    out(f'1..0 # SKIP {reason}')
    return 0


class Tap:
    """Numbered test points, the plan printed at the end."""

    def __init__(self, dependent=False):
        self.dependent = dependent
        self.n = 0
        self.failures = 0       # test points reported "not ok"
        self.finished = False

    @property
    def failed(self):
        """True once a test point failed."""
        return self.failures > 0

    def _point(self, good, desc, directive='', diag=''):
        self.n += 1
        if not good:
            self.failures += 1
        out(f'{"ok" if good else "not ok"} {self.n} - {desc}{directive}')
        if diag:
            for line in str(diag).splitlines():
                out(f'# {line}')
        return good

    def ok(self, cond, desc, diag=''):
        """A test point that holds when cond is true; diag (if any) is
        printed as comments either way.  Returns cond."""
        self._point(bool(cond), desc, diag=diag)
        return cond

    def check(self, desc, func, *args):
        """Run func(*args) as a test point: an exception fails it, Skip
        skips it.  Returns what func returned (None if it did not)."""
        if self.dependent and self.failed:
            self._point(False, desc, ' # not run: an earlier check failed')
            return None
        start = time.monotonic()
        try:
            result = func(*args)
        except Skip as e:
            self._point(True, desc, f' # SKIP {e}')
            return None
        except Exception as e:          # pylint: disable=broad-except
            self._point(False, desc, diag=f'{type(e).__name__}: {e}\n'
                        + traceback.format_exc())
            return None
        self._point(True, desc, f' ({time.monotonic() - start:.1f}s)')
        return result

    def done(self):
        """Print the plan; the exit code (1 if a test point failed)."""
        if not self.finished:
            self.finished = True
            out(f'1..{self.n}')
        return 1 if self.failed else 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not issubclass(exc_type, SystemExit):
            # a test's own code failed outside a check: a failing point,
            # so that the plan still matches
            self._point(False, f'the test ran to its end ({exc_type.__name__})',
                        diag=''.join(traceback.format_exception(exc_type, exc, tb)))
        self.done()
        return False

