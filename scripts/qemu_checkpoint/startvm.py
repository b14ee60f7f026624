# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-checkpoint start: the VM's command line rebuilt from the store's
config.json, on the images the manifest names as active."""

import json
import os
import shutil
import subprocess
import time

from .qmp import CLIError, QMPCommandError
from .session import answers, default_qemu, qemu_error, wait_for_qmp

CONSOLE_ID = 'qemu-checkpoint-console'

# Options dropped with their argument, and dropped flags
DROP_WITH_ARG = {'qmp', 'qmp-pretty', 'monitor', 'mon', 'pidfile',
                 'incoming', 'checkpoints'}
DROP_FLAGS = {'S', 'daemonize'}
# Options known to take no argument (the others take one when the next
# word does not start with '-')
FLAGS = DROP_FLAGS | {
    's', 'nographic', 'nodefaults', 'no-user-config', 'no-reboot',
    'no-shutdown', 'enable-kvm', 'snapshot', 'full-screen', 'no-hpet',
    'no-acpi', 'win2k-hack', 'no-fd-bootchk', 'old-param', 'preconfig',
    'only-migratable', 'enable-sync-profile', 'portrait', 'alt-grab',
    'ctrl-grab', 'no-quit', 'version', 'help', 'h'}
# Options whose argument may name a chardev ("chardev:ID")
CHARDEV_USERS = {'serial', 'parallel', 'monitor', 'qmp', 'qmp-pretty',
                 'debugcon', 'gdb'}


# -- QEMU's option syntax -----------------------------------------------------

def split_keyval(s):
    """'a=1,b=x,,y' -> ['a=1', 'b=x,y'] (QemuOpts/keyval: ',,' is a comma)."""
    parts, cur, i = [], '', 0
    while i < len(s):
        if s[i] == ',':
            if s[i + 1:i + 2] == ',':
                cur += ','
                i += 2
                continue
            parts.append(cur)
            cur = ''
        else:
            cur += s[i]
        i += 1
    parts.append(cur)
    return parts


def join_keyval(parts):
    return ','.join(p.replace(',', ',,') for p in parts)


def keyval_dict(s):
    out = {}
    for p in split_keyval(s):
        k, sep, v = p.partition('=')
        if sep:
            out[k] = v
    return out


def option_name(word):
    """'-qmp' or '--qmp' -> 'qmp'; None for a word that is no option."""
    if word.startswith('--') and len(word) > 2:
        return word[2:]
    if word.startswith('-') and len(word) > 1:
        return word[1:]
    return None


def parse_argv(argv):
    """QEMU's arguments (without the program) as [(option, value)]:
    option None for a positional word, value None for a flag."""
    out, i = [], 0
    while i < len(argv):
        name = option_name(argv[i])
        if name is None:
            out.append((None, argv[i]))
            i += 1
        elif name in FLAGS or i + 1 >= len(argv) or \
                (argv[i + 1].startswith('-') and name not in DROP_WITH_ARG
                 and name not in ('append', 'chardev', 'serial')):
            out.append((name, None))
            i += 1
        else:
            out.append((name, argv[i + 1]))
            i += 2
    return out


def unparse(pairs):
    argv = []
    for name, value in pairs:
        if name is not None:
            argv.append('-' + name)
        if value is not None:
            argv.append(value)
    return argv


def chardev_refs(name, value):
    """The chardev ids an option's value uses."""
    if value is None:
        return set()
    refs = set()
    if name in CHARDEV_USERS and value.startswith('chardev:'):
        refs.add(value[len('chardev:'):])
    if name != 'chardev' and '=' in value and not value.startswith('{'):
        for p in split_keyval(value):
            k, sep, v = p.partition('=')
            if sep and k == 'chardev':
                refs.add(v)
    return refs


def chardev_id(value):
    return keyval_dict(value).get('id')


# -- disks --------------------------------------------------------------------

def canonical(path, cwd):
    return os.path.realpath(os.path.join(cwd, path))


def _swap(value, cwd, images):
    """(new value, list of the old images replaced) for a path value."""
    if value and canonical(value, cwd) in images:
        old = canonical(value, cwd)
        return images[old], [old]
    return value, []


class Formats:
    """The format changes of the images replaced (an export to another
    format): old image -> (old format, new format), and the node names
    of the protocol nodes replaced, whose format node must change too."""

    def __init__(self, changes):
        self.changes = changes or {}
        self.nodes = {}

    def change(self, replaced):
        """(old, new) format of the first image in replaced that changes
        format, else None."""
        for old in replaced:
            if old in self.changes:
                return self.changes[old]
        return None


def _swap_json(obj, cwd, images, done, formats):
    """obj with its "filename" members replaced; a format node whose
    "file" child was replaced gets the new format as "driver"."""
    if isinstance(obj, list):
        return [_swap_json(v, cwd, images, done, formats) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out, mine = {}, []
    for k, v in obj.items():
        if k == 'filename' and isinstance(v, str):
            v, d = _swap(v, cwd, images)
            mine += d
        elif k == 'file' and isinstance(v, dict):
            sub = []
            v = _swap_json(v, cwd, images, sub, formats)
            change = formats.change(sub)
            if change and obj.get('driver') == change[0]:
                out['driver'] = change[1]
            done += sub
        elif k == 'file' and isinstance(v, str) and v in formats.nodes:
            change = formats.nodes[v]
            if obj.get('driver') == change[0]:
                out['driver'] = change[1]
        else:
            v = _swap_json(v, cwd, images, done, formats)
        if k not in out:
            out[k] = v
    change = formats.change(mine)
    if change and isinstance(obj.get('node-name'), str):
        formats.nodes[obj['node-name']] = change
    done += mine
    return out


def swap_images(name, value, cwd, images, formats=None):
    """An option's value with every image of images (canonical old path
    -> new path) replaced: a whole value (-hda IMG, a positional
    image), 'file=' of -drive, '[*.]filename=' in key=value lists
    (-blockdev, -drive), 'filename' members of JSON (-blockdev {...}).
    When the new image has another format (formats), the format goes
    with it: 'format=' of -drive, the 'driver' of the format node above
    the file node (in the same JSON, or a -blockdev whose file= names
    the file node).  Returns (value, the old images replaced)."""
    formats = formats or Formats({})
    if value is None:
        return value, []
    done = []
    if value.startswith('{'):
        try:
            obj = json.loads(value)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            nodes = dict(formats.nodes)
            new = _swap_json(obj, cwd, images, done, formats)
            if done or formats.nodes != nodes or new != obj:
                return json.dumps(new, separators=(',', ':')), done
            return value, []
    if '=' in value and name is not None:
        parts = split_keyval(value)
        changed = False
        for i, p in enumerate(parts):
            k, sep, v = p.partition('=')
            if not sep:
                continue
            if k == 'filename' or k.endswith('.filename') or \
                    (k == 'file' and name in ('drive', 'hda', 'hdb', 'hdc',
                                              'hdd', 'cdrom', 'pflash')):
                nv, d = _swap(v, cwd, images)
                if d:
                    parts[i] = f'{k}={nv}'
                    done += d
                    changed = True
        kv = keyval_dict(value)
        change = formats.change(done)
        if change is None and name == 'blockdev' and \
                kv.get('file') in formats.nodes:
            change = formats.nodes[kv['file']]
        if change:
            for i, p in enumerate(parts):
                k, _, v = p.partition('=')
                if k in ('format', 'driver') and v == change[0]:
                    parts[i] = f'{k}={change[1]}'
                    changed = True
            if done and 'node-name' in kv:
                formats.nodes[kv['node-name']] = change
        if changed:
            return join_keyval(parts), done
    nv, d = _swap(value, cwd, images)
    return nv, d


# -- the command line ---------------------------------------------------------

def rewrite(argv, cwd, store, images, sock, console=None, replace=(),
            resume=False, extra=(), formats=None):
    """The command line that starts the VM of config.json's argv on its
    active images.

    images: canonical old image -> new image; sock: QMP socket path;
    console: a chardev backend spec for the serial console (None: keep
    the serial ports); replace: (OLD, NEW) strings replaced in every
    argument first; resume: start paused (-S) for a checkpoint apply;
    extra: arguments appended; formats: old image -> (old format, new
    format) for the images whose format changes.  Returns (argv, old
    images not found)."""
    fmts = Formats(formats)
    words = []
    for w in argv[1:]:
        for old, new in replace:
            w = w.replace(old, new)
        words.append(w)
    pairs = parse_argv(words)
    kept, dropped_refs, ckpt_opts = [], set(), {}
    for name, value in pairs:
        if name in DROP_WITH_ARG or name in DROP_FLAGS or \
                (console is not None and name == 'serial'):
            dropped_refs |= chardev_refs(name, value)
            if name == 'checkpoints' and value:
                ckpt_opts = keyval_dict(value)
            continue
        kept.append((name, value))
    # the chardevs only the dropped options used
    used = set()
    for name, value in kept:
        if name != 'chardev':
            used |= chardev_refs(name, value)
    out, found = [], set()
    for name, value in kept:
        if name == 'chardev' and value and chardev_id(value) in dropped_refs \
                and chardev_id(value) not in used:
            continue
        value, done = swap_images(name, value, cwd, images, fmts)
        found.update(done)
        out.append((name, value))
    new = [argv[0]] + unparse(out)
    opts = [f'dir={store}']
    keep = ('type', 'freeze-timeout', 'apply-load')
    for key in keep + (() if resume else ('auto',)):
        if key in ckpt_opts:
            opts.append(f'{key}={ckpt_opts[key]}')
    new += ['-checkpoints', join_keyval(opts)]
    new += ['-qmp', f'unix:{sock.replace(",", ",,")},server=on,wait=off']
    if console is not None:
        spec = console
        if ',' not in spec and '=' not in spec:
            spec = f'socket,path={spec.replace(",", ",,")},server=on,wait=off'
        new += ['-chardev', f'{spec},id={CONSOLE_ID}',
                '-serial', f'chardev:{CONSOLE_ID}']
    if resume:
        new.append('-S')
    new += list(extra)
    return new, [old for old in images if old not in found]


def load_json(path, what):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise CLIError(f'{path} does not exist: {what}') from None
    except (OSError, ValueError) as e:
        raise CLIError(f'cannot read {path}: {e}') from None


def plan(store, sock, console=None, replace=(), extra=(), qemu=None):
    """(argv, cwd, resume checkpoint or None) to start the store's VM."""
    config = load_json(os.path.join(store, 'config.json'),
                       'QEMU writes it when it opens the store with a VM'
                       ' (this store has never been used by one, or by a'
                       ' QEMU that does not write it)')
    manifest = load_json(os.path.join(store, 'manifest.json'),
                         'not a checkpoint store')
    argv = config.get('argv')
    if not isinstance(argv, list) or not argv or \
            not all(isinstance(a, str) for a in argv):
        raise CLIError(f'{store}/config.json has no command line ("argv")')
    if config.get('version') != 1:
        raise CLIError(f'{store}/config.json: unknown version'
                       f' {config.get("version")!r}')
    cwd = config.get('cwd') or store
    if not os.path.isdir(cwd):
        cwd = store
    active = {d['device']: (os.path.realpath(os.path.join(store, d['filename'])),
                            d.get('format'))
              for d in manifest.get('active', [])}
    images, formats = {}, {}
    for d in config.get('disks', []):
        old = os.path.realpath(os.path.join(cwd, d['filename']))
        new, fmt = active.get(d['device'], (None, None))
        if new and new != old:
            images[old] = new
            if fmt and d.get('format') and fmt != d['format']:
                formats[old] = (d['format'], fmt)
    resume = config.get('resume-checkpoint')
    binary = os.path.join(cwd, argv[0]) if '/' in argv[0] else \
        shutil.which(argv[0])
    if qemu or not binary or \
            not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        binary = default_qemu(qemu)
    new, missing = rewrite([binary] + argv[1:], cwd, store, images, sock,
                           console, replace, bool(resume), extra, formats)
    if missing:
        raise CLIError(f'the command line in {store}/config.json does not'
                       f' name the image {missing[0]} (to be replaced by'
                       f' {images[missing[0]]})')
    return new, cwd, resume


def start(store, sock, log_path, console=None, replace=(), extra=(),
          qemu=None, timeout=60.0):
    """Start the VM detached; returns {'pid', 'qmp', 'argv', 'log'} and,
    when config.json asked for it, 'applied' (the result of applying its
    resume-checkpoint)."""
    argv, cwd, resume = plan(store, sock, console, replace, extra, qemu)
    if len(sock.encode()) >= 108:
        raise CLIError(f'the QMP socket path {sock} is too long for a unix'
                       ' socket (give a shorter one with --qmp)')
    if os.path.exists(sock):
        if answers(sock):
            raise CLIError(f'something answers on {sock} already: is the VM'
                           ' running? (give another socket with --qmp)')
        os.unlink(sock)
    try:
        log = open(log_path, 'ab')
    except OSError as e:
        raise CLIError(f'cannot write the log {log_path}: {e.strerror}') \
            from None
    with log:
        offset = log.seek(0, os.SEEK_END)
        log.write(f'qemu-checkpoint start {time.strftime("%Y-%m-%d %H:%M:%S")}:'
                  f' {json.dumps(argv)}\n'.encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log,
                                    start_new_session=True)
        except OSError as e:
            raise CLIError(f'cannot run {argv[0]}: {e.strerror}') from None

    qmp = None
    try:
        qmp = _wait(proc, sock, log_path, offset, argv[0], timeout)
        result = {'pid': proc.pid, 'qmp': sock, 'argv': argv, 'log': log_path}
        if resume:
            try:
                r = qmp.cmd('checkpoint-apply', checkpoint=resume)
                if qmp.cmd('query-status')['status'] != 'running':
                    qmp.cmd('cont')
            except QMPCommandError as e:
                raise CLIError(f'cannot apply the checkpoint {resume} that'
                               f' {store}/config.json resumes: {e}') from None
            result['applied'] = dict(r, id=resume)
        return result
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        if qmp:
            qmp.close()


def _wait(proc, sock, log_path, offset, binary, timeout):
    """wait_for_qmp, with QEMU's error taken from this run's part of the
    log only."""
    try:
        return wait_for_qmp(proc, sock, log_path, binary, timeout,
                            'QEMU did not start')
    except CLIError:
        if proc.poll() is None:
            raise
        with open(log_path, 'rb') as f:
            f.seek(offset)
            text = f.read().decode(errors='replace')
        text = '\n'.join(text.splitlines()[1:])     # our header line
        raise CLIError(f'QEMU did not start (it exited with status'
                       f' {proc.returncode}): {qemu_error(text, binary)}'
                       ) from None
