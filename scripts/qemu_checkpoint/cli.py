# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-checkpoint: manage the Hyper-V-style checkpoints of a QEMU VM.

Every command runs the project's QMP commands, against a running VM
(--qmp SOCKET) or against a stopped VM's store (--store DIR: a QEMU
without a guest is started on it, offline, and quit afterwards).  The
JSON output of each command (--json) is documented with its schema in
scripts/qemu-checkpoint.md.
"""

import argparse
import json
import os
import signal
import sys

from . import render
from .qmp import CLIError
from .session import Session, Progress, wait, check_store
from . import startvm

PROG = 'qemu-checkpoint'


# -- helpers -------------------------------------------------------------------

def out_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write('\n')


def out_lines(lines):
    for line in lines:
        print(line)


def checkpoints(qmp):
    return qmp.cmd('query-checkpoints') or []


def resolve(cps, key):
    """The checkpoint key names: an id, a unique name, or a unique
    prefix (at least 4 characters) of an id."""
    for c in cps:
        if c['id'] == key:
            return c
    named = [c for c in cps if c['name'] == key]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise CLIError(f'{len(named)} checkpoints are named {key!r}'
                       f' ({", ".join(c["id"] for c in named)}): give an id')
    if len(key) >= 4:
        pre = [c for c in cps if c['id'].startswith(key.lower())]
        if len(pre) == 1:
            return pre[0]
        if len(pre) > 1:
            raise CLIError(f'{key!r} is the beginning of several ids: give'
                           ' more of it')
    raise CLIError(f'no checkpoint {key!r}: no id or name matches'
                   f' ({len(cps)} checkpoint{"s" if len(cps) != 1 else ""};'
                   f' see "{PROG} list")')


def find(cps, cid):
    for c in cps:
        if c['id'] == cid:
            return c
    return None


def event_matching(qmp, name, **data):
    return qmp.take_event(lambda e: e['event'] == name and all(
        e.get('data', {}).get(k) == v for k, v in data.items()))


# -- list, info ----------------------------------------------------------------

def cmd_list(s, args):
    cps = checkpoints(s.qmp)
    if args.json:
        out_json(cps)
    elif args.tree:
        out_lines(render.checkpoint_tree(cps))
    else:
        out_lines(render.checkpoint_table(cps))
    return 0


def cmd_info(s, args):
    cps = checkpoints(s.qmp)
    c = resolve(cps, args.checkpoint)
    if args.json:
        out_json(c)
    else:
        out_lines(render.checkpoint_info(c, cps))
    return 0


# -- create --------------------------------------------------------------------

def wait_created(qmp, cid, progress):
    """Wait for the checkpoint's create job: CHECKPOINT_CREATED, or
    CLIError with the error of CHECKPOINT_CREATE_FAILED."""
    job_id = f'checkpoint-{cid}'
    gone_polls = [0]

    def finished(jobs):
        if event_matching(qmp, 'CHECKPOINT_CREATED', id=cid):
            return True
        ev = event_matching(qmp, 'CHECKPOINT_CREATE_FAILED', id=cid)
        if ev:
            raise CLIError(f'the checkpoint was not created:'
                           f' {ev["data"]["error"]}')
        if any(j['id'] == job_id for j in jobs):
            return None
        # No job: the events come first, but look at the tree too
        gone_polls[0] += 1
        if gone_polls[0] < 5:
            return None
        c = find(checkpoints(qmp), cid)
        if c and c['state'] == 'ready':
            return True
        if not c:
            raise CLIError('the checkpoint was not created (QEMU dropped it)')
        return None

    wait(qmp, finished, lambda jobs: job_id, progress, 'creating checkpoint')


def cmd_create(s, args):
    qargs = {}
    if args.name is not None:
        qargs['name'] = args.name
    if args.type:
        qargs['type'] = args.type
    r = s.qmp.cmd('checkpoint-create', qargs)
    cid = r['id']
    wait_created(s.qmp, cid, Progress())
    c = find(checkpoints(s.qmp), cid)
    if c is None:
        raise CLIError(f'the checkpoint {cid} is not in the tree')
    if args.json:
        out_json(c)
    else:
        print(f'Created checkpoint {c["name"]!r} ({cid}): {c["type"]},'
              f' {c["consistency"]}')
        if c.get('fallback-reason'):
            print(f'A standard checkpoint instead of a production one:'
                  f' {c["fallback-reason"]}')
    return 0


# -- apply ---------------------------------------------------------------------

def cmd_apply(s, args):
    qmp = s.qmp
    cps = checkpoints(qmp)
    c = resolve(cps, args.checkpoint)
    qargs = {'checkpoint': c['id']}
    if args.resume is not None:
        qargs['resume'] = args.resume
    if not args.checkpoint_first:
        # Without a checkpoint first the apply is quick: the command
        # returns when it is done, with its error if it failed
        r = qmp.cmd('checkpoint-apply', qargs)
    else:
        # A job: the memory save of the checkpoint taken first can be long
        job_id = f'qemu-checkpoint-apply-{os.getpid()}'
        qargs.update({'checkpoint-first': True, 'job-id': job_id})
        r = qmp.cmd('checkpoint-apply', qargs)
        created = r.get('created')
        seen = [False]

        def finished(jobs):
            if event_matching(qmp, 'CHECKPOINT_APPLIED', id=c['id']):
                return True
            if created:
                ev = event_matching(qmp, 'CHECKPOINT_CREATE_FAILED',
                                    id=created)
                if ev:
                    raise CLIError(f'cannot checkpoint the current state'
                                   f' first: {ev["data"]["error"]};'
                                   ' nothing was applied')
            if any(j['id'] == job_id for j in jobs):
                seen[0] = True
                return None
            # The job has ended and CHECKPOINT_APPLIED came not (it is
            # sent before the job ends)
            qmp.poll_events(0.5)
            if event_matching(qmp, 'CHECKPOINT_APPLIED', id=c['id']):
                return True
            raise CLIError(f'the apply of {c["name"]!r} failed (QEMU\'s'
                           f' job {job_id} ended without applying it)')

        def progress_job(jobs):
            ids = [j['id'] for j in jobs]
            if created and f'checkpoint-{created}' in ids:
                return f'checkpoint-{created}'
            return job_id

        wait(qmp, finished, progress_job, Progress(), 'applying checkpoint')
    status = qmp.cmd('query-status')['status']
    result = dict(r, id=c['id'], status=status)
    if args.json:
        out_json(result)
        return 0
    print(f'Applied checkpoint {c["name"]!r} ({c["id"]})')
    if r.get('created'):
        n = find(checkpoints(qmp), r['created'])
        print(f'Checkpoint of the state before the apply:'
              f' {n["name"] if n else "?"!r} ({r["created"]})')
    if r.get('powered-off') and status != 'running':
        print('The VM is off, as a production checkpoint leaves it: QMP'
              ' "cont" boots it from the checkpoint\'s disks')
    else:
        print(f'VM status: {status}')
    return 0


# -- rename --------------------------------------------------------------------

def cmd_rename(s, args):
    c = resolve(checkpoints(s.qmp), args.checkpoint)
    s.qmp.cmd('checkpoint-rename', checkpoint=c['id'], name=args.new_name)
    n = find(checkpoints(s.qmp), c['id'])
    if args.json:
        out_json(n)
    else:
        print(f'Renamed checkpoint {c["name"]!r} ({c["id"]}) to'
              f' {n["name"]!r}')
    return 0


# -- delete, merges ------------------------------------------------------------

def wait_merges(qmp, progress, completed):
    """Wait until no merge runs or is about to: the checkpoint-merge job
    has ended, or it is paused.  completed: a list that gets the data of
    each CHECKPOINT_MERGE_COMPLETED.  Returns (query-checkpoint-merges,
    ids of the paused merge jobs)."""
    def finished(jobs):
        while True:
            ev = qmp.take_event(lambda e: e['event'] ==
                                'CHECKPOINT_MERGE_COMPLETED')
            if not ev:
                break
            completed.append(ev['data'])
        mjobs = [j for j in jobs if j['type'] == 'checkpoint-merge']
        merges = qmp.cmd('query-checkpoint-merges') or []
        paused = [j['id'] for j in mjobs if j['status'] in ('paused',
                                                            'standby')]
        if not mjobs or len(paused) == len(mjobs):
            return merges, paused
        if any(m['state'] == 'paused' for m in merges) and \
                not any(m['state'] == 'running' for m in merges):
            return merges, paused
        return None

    def progress_job(jobs):
        for j in jobs:
            if j['type'] == 'checkpoint-merge':
                return j['id']
        return None

    return wait(qmp, finished, progress_job, progress, 'merging')


def merge_problems(merges, paused_jobs):
    """Lines (for stderr) about the merges that stopped: paused, failed."""
    lines = [f'merge of disk {m["device"]} ({" ".join(m["images"])}) is'
             f' {m["state"]}' + (f': {m["reason"]}' if m.get('reason') else '')
             for m in merges if m['state'] in ('paused', 'failed')]
    if not lines and paused_jobs:
        lines = [f'the merge job {j} is paused (resume it with "{PROG}'
                 ' merges --resume")' for j in paused_jobs]
    return lines


def report_merges(merges, paused_jobs, completed, as_json):
    """Human lines about the merges done and left, the problems on
    stderr; returns the exit code."""
    if not as_json:
        for d in completed:
            print(f'Merged: disk {d["device"]} into {d["target"]}')
        for m in merges:
            if m['state'] == 'pending':
                print(f'Merge pending: disk {m["device"]}'
                      f' {" ".join(m["images"])}: {m.get("reason", "")}')
    sys.stdout.flush()
    problems = merge_problems(merges, paused_jobs)
    for p in problems:
        sys.stderr.write(f'{PROG}: {p}\n')
    return 1 if problems else 0


def cmd_delete(s, args):
    qmp = s.qmp
    if args.all == (args.checkpoint is not None):
        raise CLIError('give a checkpoint or --all (not both)')
    if args.all and args.subtree:
        raise CLIError('--subtree goes with a checkpoint, not with --all')
    cps = checkpoints(qmp)
    qargs = {}
    if args.all:
        qargs['all'] = True
    else:
        qargs['checkpoint'] = resolve(cps, args.checkpoint)['id']
    if args.subtree:
        qargs['subtree'] = True
    if args.dry_run:
        qargs['dry-run'] = True
    plan = qmp.cmd('checkpoint-delete', qargs)
    if args.dry_run:
        if args.json:
            out_json(plan)
        else:
            out_lines(render.plan_lines(plan, cps, True))
        return 0
    if not args.json:
        out_lines(render.plan_lines(plan, cps, False))
        sys.stdout.flush()
    completed = []
    merges, paused = wait_merges(qmp, Progress(), completed)
    if args.json:
        out_json(dict(plan, merges=merges))
    return report_merges(merges, paused, completed, args.json)


def cmd_merges(s, args):
    qmp = s.qmp
    waiting = args.resume or args.wait
    if args.resume:
        qmp.cmd('checkpoint-merge-resume')
    completed, paused = [], []
    if waiting:
        merges, paused = wait_merges(qmp, Progress(), completed)
    else:
        merges = qmp.cmd('query-checkpoint-merges') or []
    if args.json:
        out_json(merges)
    else:
        for d in completed:
            print(f'Merged: disk {d["device"]} into {d["target"]}')
        out_lines(render.merge_lines(merges))
    if waiting:
        return report_merges(merges, paused, [], True)
    return 0


# -- export --------------------------------------------------------------------

def cmd_export(s, args):
    qmp = s.qmp
    if not qmp.has_command('checkpoint-export'):
        raise CLIError('this QEMU cannot export checkpoints (it has no QMP'
                       ' command checkpoint-export)')
    c = resolve(checkpoints(qmp), args.checkpoint)
    target = os.path.abspath(args.dir)
    qargs = {'checkpoint': c['id'], 'dir': target}
    if args.format:
        qargs['format'] = args.format
    r = qmp.cmd('checkpoint-export', qargs)
    job_id = r.get('job-id')

    def same_dir(ev):
        d = ev['data'].get('dir')
        return d is None or os.path.realpath(d) == os.path.realpath(target)

    polls = [0]

    def finished(jobs):
        ev = qmp.take_event(lambda e: e['event'] == 'CHECKPOINT_EXPORTED'
                            and e['data'].get('id') == c['id'] and same_dir(e))
        if ev:
            return ev['data']
        ev = qmp.take_event(lambda e: e['event'] == 'CHECKPOINT_EXPORT_FAILED'
                            and e['data'].get('id') == c['id'] and same_dir(e))
        if ev:
            raise CLIError(f'the export of {c["name"]!r} failed:'
                           f' {ev["data"]["error"]}')
        if any(j['id'] == job_id for j in jobs):
            return None
        polls[0] += 1
        if polls[0] >= 10:
            raise CLIError(f'the export job {job_id} ended without'
                           ' CHECKPOINT_EXPORTED or CHECKPOINT_EXPORT_FAILED')
        return None

    data = wait(qmp, finished, lambda jobs: job_id, Progress(),
                'exporting checkpoint')
    if args.json:
        out_json(data)
    else:
        print(f'Exported checkpoint {c["name"]!r} ({c["id"]}) to'
              f' {data.get("dir", target)}')
        print(f'Start it as a new VM: {PROG} start --store'
              f' {data.get("dir", target)}')
    return 0


# -- start ---------------------------------------------------------------------

def cmd_start(args):
    if not args.store:
        raise CLIError('start needs --store DIR (the stopped VM\'s store)')
    store = check_store(os.path.abspath(args.store))
    sock = os.path.abspath(args.qmp) if args.qmp else \
        os.path.join(store, 'qmp.sock')
    log = os.path.abspath(args.log) if args.log else \
        os.path.join(store, 'qemu.log')
    replace = []
    for r in args.replace or []:
        old, sep, new = r.partition('=')
        if not sep or not old:
            raise CLIError(f'--replace takes OLD=NEW, not {r!r}')
        replace.append((old, new))
    extra = list(args.extra or [])
    if extra and extra[0] == '--':
        extra = extra[1:]
    result = startvm.start(store, sock, log, args.console, replace, extra,
                           args.qemu, args.start_timeout)
    if args.json:
        out_json(result)
    else:
        print(f'Started the VM of {store}: pid {result["pid"]}')
        if 'applied' in result:
            print(f'Applied checkpoint {result["applied"]["id"]}'
                  ' (config.json resumes it)')
        print(f'QMP:  {result["qmp"]}')
        print(f'Log:  {result["log"]}')
    return 0


# -- arguments -----------------------------------------------------------------

def common_options(p, top):
    """The options every command takes, before or after its name."""
    d = {} if top else {'default': argparse.SUPPRESS}
    g = p.add_argument_group('where')
    g.add_argument('--qmp', metavar='SOCKET', **d,
                   help='QMP unix socket of a running VM (start: the socket'
                   ' the started VM listens on)')
    g.add_argument('--store', metavar='DIR', **d,
                   help='checkpoint store of a stopped VM')
    g.add_argument('--qemu', metavar='PATH', **d,
                   help='QEMU binary for --store and start (default:'
                   ' $QEMU_CHECKPOINT_QEMU, else the project\'s'
                   ' build/qemu/qemu-system-x86_64)')
    g.add_argument('--timeout', type=float, metavar='SECONDS', **d,
                   help='how long to wait for a QMP greeting (default 10)')
    p.add_argument('--json', action='store_true', **d,
                   help='machine-readable output (schema in'
                   ' scripts/qemu-checkpoint.md)')


def parser():
    p = argparse.ArgumentParser(
        prog=PROG,
        description='Manage the Hyper-V-style checkpoints of a QEMU VM, '
        'running (--qmp SOCKET) or stopped (--store DIR).',
        epilog='Checkpoints are named by id, by unique name or by a unique'
        ' beginning of an id (4 characters or more).')
    common_options(p, True)
    sub = p.add_subparsers(dest='command', metavar='COMMAND')

    def add(name, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        common_options(sp, False)
        return sp

    sp = add('list', 'list the checkpoints (virsh snapshot-list,'
             ' Get-VMCheckpoint)')
    sp.add_argument('--tree', action='store_true', help='show the tree')
    sp = add('info', 'show one checkpoint (virsh snapshot-info)')
    sp.add_argument('checkpoint', metavar='CHECKPOINT')
    sp = add('create', 'take a checkpoint and wait until it is complete'
             ' (virsh snapshot-create-as, Checkpoint-VM)')
    sp.add_argument('name', metavar='NAME', nargs='?',
                    help='default: "<vm name> - <date time>"')
    sp.add_argument('--type', choices=['standard', 'production',
                                       'production-only'],
                    help='default: the store\'s default type')
    sp = add('apply', 'return the VM to a checkpoint (virsh snapshot-revert,'
             ' Restore-VMCheckpoint)')
    sp.add_argument('checkpoint', metavar='CHECKPOINT')
    sp.add_argument('--checkpoint-first', action='store_true',
                    help='checkpoint the current state first (Hyper-V\'s'
                    ' "create checkpoint and apply")')
    g = sp.add_mutually_exclusive_group()
    g.add_argument('--resume', dest='resume', action='store_true',
                   default=None, help='run the VM afterwards (also boots'
                   ' a production checkpoint)')
    g.add_argument('--no-resume', dest='resume', action='store_false',
                   help='leave the VM paused')
    sp = add('rename', 'rename a checkpoint (Rename-VMCheckpoint)')
    sp.add_argument('checkpoint', metavar='CHECKPOINT')
    sp.add_argument('new_name', metavar='NEWNAME')
    sp = add('delete', 'delete checkpoints, merging their images, and wait'
             ' for the merges (virsh snapshot-delete, Remove-VMCheckpoint)')
    sp.add_argument('checkpoint', metavar='CHECKPOINT', nargs='?')
    sp.add_argument('--all', action='store_true',
                    help='delete every checkpoint')
    sp.add_argument('--subtree', action='store_true',
                    help='and its descendants (Remove-VMCheckpoint'
                    ' -IncludeAllChildCheckpoints)')
    sp.add_argument('--dry-run', action='store_true',
                    help='print what would be done, change nothing')
    sp = add('export', 'export a checkpoint as a new VM\'s store'
             ' (Export-VMCheckpoint)')
    sp.add_argument('checkpoint', metavar='CHECKPOINT')
    sp.add_argument('dir', metavar='DIR')
    sp.add_argument('--format', choices=['vhdx', 'qcow2'],
                    help='image format of the exported disks')
    sp = add('merges', 'list the merges waiting or running')
    sp.add_argument('--resume', action='store_true',
                    help='resume paused and failed merges and wait for them')
    sp.add_argument('--wait', action='store_true',
                    help='wait until no merge runs')
    sp = add('start', 'start the stopped VM of --store DIR on its active'
             ' images (Start-VM)')
    sp.add_argument('--console', metavar='CHARDEV',
                    help='replace the serial ports by one on this chardev'
                    ' (a QEMU chardev spec such as "file,path=F", or a path'
                    ' for a unix socket server)')
    sp.add_argument('--replace', action='append', metavar='OLD=NEW',
                    help='replace the string OLD by NEW in every argument'
                    ' of the command line (repeatable)')
    sp.add_argument('--log', metavar='FILE',
                    help='QEMU\'s output (default DIR/qemu.log)')
    sp.add_argument('--start-timeout', type=float, default=60.0,
                    metavar='SECONDS',
                    help='how long QEMU may take to answer on QMP')
    sp.add_argument('extra', nargs=argparse.REMAINDER, metavar='-- ARGS',
                    help='more QEMU arguments')
    return p


COMMANDS = {'list': cmd_list, 'info': cmd_info, 'create': cmd_create,
            'apply': cmd_apply, 'rename': cmd_rename, 'delete': cmd_delete,
            'merges': cmd_merges, 'export': cmd_export}


def run(args):
    if args.command == 'start':
        return cmd_start(args)
    if args.qmp and args.store:
        raise CLIError('give --qmp SOCKET or --store DIR, not both')
    timeout = args.timeout or 10.0
    if args.qmp:
        s = Session.online(args.qmp, timeout)
    elif args.store:
        s = Session.open_store(os.path.abspath(args.store), args.qemu,
                               max(timeout, 30.0))
    else:
        raise CLIError('give --qmp SOCKET (a running VM) or --store DIR'
                       ' (a stopped VM\'s store)')
    with s:
        return COMMANDS[args.command](s, args)


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if not args.command:
        p.print_usage(sys.stderr)
        sys.stderr.write(f'{PROG}: error: give a command\n')
        return 2
    if getattr(args, 'extra', None) and args.extra[0] != '--':
        p.error(f'unrecognized arguments: {" ".join(args.extra)}'
                ' (QEMU arguments go after --)')
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        return run(args)
    except CLIError as e:
        msg = ' '.join(str(e).split('\n')).strip()
        sys.stderr.write(f'{PROG}: {msg}\n')
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f'\n{PROG}: interrupted (a job that QEMU runs goes'
                         ' on)\n')
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:      # pylint: disable=broad-except
        # never a traceback: one line that says what failed
        sys.stderr.write(f'{PROG}: internal error: {type(e).__name__}: {e}\n')
        return 1
