"""TAP output for the guest tests: numbered checks that build on each
other, so once one fails the rest are reported as not run."""

import time
import traceback


class Tap:
    """Runs numbered checks in order; once one fails, the rest are
    reported as failed too, since each builds on the previous state --
    unless the checks are independent of each other."""

    def __init__(self, plan, independent=False):
        self.plan = plan
        self.independent = independent
        self.n = 0
        self.failed = False
        self.failures = 0
        print(f'1..{plan}', flush=True)

    def check(self, desc, func):
        self.n += 1
        if self.failed and not self.independent:
            self.failures += 1
            print(f'not ok {self.n} - {desc} # not run: an earlier check failed', flush=True)
            return None
        start = time.monotonic()
        try:
            result = func()
        except Exception as e:          # pylint: disable=broad-except
            self.failed = True
            self.failures += 1
            print(f'not ok {self.n} - {desc}', flush=True)
            for line in (f'{type(e).__name__}: {e}\n' + traceback.format_exc()).splitlines():
                print(f'# {line}', flush=True)
            return None
        print(f'ok {self.n} - {desc} ({time.monotonic() - start:.1f}s)', flush=True)
        return result


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)
