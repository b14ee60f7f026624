# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers of the qemu-checkpoint tests: run the CLI, check its errors,
and validate its JSON output against the schemas documented in
scripts/qemu-checkpoint.md (read from that file, so that the document
and the tests cannot drift apart)."""

import json
import os
import re
import socket
import subprocess
import threading

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CLI = os.path.join(REPO, 'scripts', 'qemu-checkpoint')
DOC = os.path.join(REPO, 'scripts', 'qemu-checkpoint.md')
PREFIX = 'qemu-checkpoint: '


def build_dir():
    return os.environ.get('HVCP_BUILD') or os.path.join(REPO, 'build', 'qemu')


def qemu():
    return os.path.join(build_dir(), 'qemu-system-x86_64')


def env():
    e = dict(os.environ)
    e['QEMU_CHECKPOINT_QEMU'] = qemu()
    return e


class Result:
    def __init__(self, args, rc, out, err):
        self.args, self.rc, self.out, self.err = args, rc, out, err

    def __repr__(self):
        return (f'qemu-checkpoint {" ".join(self.args)}: exit {self.rc}\n'
                f'stdout: {self.out}\nstderr: {self.err}')

    @property
    def json(self):
        try:
            return json.loads(self.out)
        except ValueError:
            raise AssertionError(f'not JSON: {self!r}') from None


def cli(*args, timeout=300, stdin=None):
    """Run qemu-checkpoint; its Result."""
    args = [str(a) for a in args]
    r = subprocess.run([CLI, *args], capture_output=True, text=True,
                       env=env(), timeout=timeout, stdin=stdin or
                       subprocess.DEVNULL)
    return Result(args, r.returncode, r.stdout, r.stderr)


def ok(*args, **kw):
    """Run qemu-checkpoint, which must succeed without a word on stderr."""
    r = cli(*args, **kw)
    if r.rc != 0 or r.err:
        raise AssertionError(f'failed: {r!r}')
    return r


def error(*args, expect_in=None, **kw):
    """Run qemu-checkpoint, which must fail with exactly one line on
    stderr that starts with 'qemu-checkpoint: ' and is no traceback;
    returns that line."""
    r = cli(*args, **kw)
    lines = r.err.splitlines()
    if r.rc == 0:
        raise AssertionError(f'succeeded: {r!r}')
    if len(lines) != 1 or not lines[0].startswith(PREFIX) or \
            'Traceback' in r.err or 'internal error' in r.err:
        raise AssertionError(f'not one error line: {r!r}')
    if expect_in and not any(s in lines[0] for s in
                             ([expect_in] if isinstance(expect_in, str)
                              else expect_in)):
        raise AssertionError(f'the error does not say {expect_in!r}: {r!r}')
    return lines[0]


# -- JSON schemas ------------------------------------------------------------

def schemas():
    """{name: schema} of the blocks marked <!-- schema: NAME --> in the
    document; 'definitions' holds the shared ones."""
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    out = {}
    for m in re.finditer(r'<!-- schema: (\S+) -->\s*```json\n(.*?)```', text,
                         re.S):
        out[m.group(1)] = json.loads(m.group(2))
    return out


TYPES = {'object': dict, 'array': list, 'string': str, 'boolean': bool,
         'null': type(None)}


def _check(inst, schema, defs, path, errors):
    if '$ref' in schema:
        _check(inst, defs[schema['$ref']], defs, path, errors)
        return
    if 'enum' in schema and inst not in schema['enum']:
        errors.append(f'{path}: {inst!r} is not one of {schema["enum"]}')
        return
    t = schema.get('type')
    if t == 'integer':
        good = isinstance(inst, int) and not isinstance(inst, bool)
    elif t:
        good = isinstance(inst, TYPES[t])
    else:
        good = True
    if not good:
        errors.append(f'{path}: {json.dumps(inst)[:80]} is not a {t}')
        return
    if t == 'object':
        props = schema.get('properties', {})
        for k in schema.get('required', []):
            if k not in inst:
                errors.append(f'{path}: member {k!r} missing')
        for k, v in inst.items():
            if k in props:
                _check(v, props[k], defs, f'{path}.{k}', errors)
            elif schema.get('additionalProperties') is False:
                errors.append(f'{path}: member {k!r} is not documented')
    if t == 'array' and 'items' in schema:
        for i, v in enumerate(inst):
            _check(v, schema['items'], defs, f'{path}[{i}]', errors)


def validate(inst, name):
    """AssertionError unless inst matches the documented schema name."""
    all_schemas = schemas()
    errors = []
    _check(inst, all_schemas[name], all_schemas['definitions'], '$', errors)
    if errors:
        raise AssertionError(f'JSON of {name} does not match its schema in'
                             f' {DOC}: ' + '; '.join(errors[:5]))
    return inst


def ok_json(name, *args, **kw):
    """Run qemu-checkpoint --json ...; its output, validated."""
    return validate(ok(*args, '--json', **kw).json, name)


# -- sockets that are not QMP ------------------------------------------------

class FakeServer:
    """A unix socket server that answers each client with `send` (bytes;
    None: nothing, it keeps the connection open) and closes it after
    hold seconds."""

    def __init__(self, path, send, hold=5.0):
        self.path = path
        self.send = send
        self.hold = hold
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                if self.send:
                    conn.sendall(self.send)
                self.stopped.wait(self.hold)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
