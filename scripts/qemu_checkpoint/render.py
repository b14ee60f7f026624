# SPDX-License-Identifier: GPL-2.0-or-later
"""Output for people: tables, the tree, readable lines."""

import time


def size_str(n):
    """Bytes as QEMU prints sizes: 512 B, 4 KiB, 1.5 MiB, 23 MiB."""
    if n is None:
        return '?'
    units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
    v = float(n)
    i = 0
    while v >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    if i == 0:
        return f'{int(n)} B'
    return f'{v:.3g} {units[i]}'


def time_str(t):
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))


def table(headers, rows):
    """Lines of a table with columns as wide as their widest cell."""
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, r)]
    def line(cells):
        return '  '.join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(headers), line(['-' * w for w in widths])] + \
        [line(r) for r in rows]


def kind(c):
    """'standard, saved-state' (and the fallback note)."""
    s = f'{c["type"]}, {c["consistency"]}'
    if c.get('fallback-reason'):
        s += ' (fallback)'
    return s


def checkpoint_table(cps):
    if not cps:
        return ['No checkpoints']
    names = {c['id']: c['name'] for c in cps}
    rows = []
    for c in cps:
        rows.append(['*' if c['current'] else '', c['name'], c['id'],
                     c['type'], c['consistency'], c['state'],
                     time_str(c['created']),
                     names.get(c.get('parent'), '') if c.get('parent') else ''])
    lines = table(['', 'Name', 'Id', 'Type', 'Consistency', 'State',
                   'Created', 'Parent'], rows)
    if any(c['current'] for c in cps):
        lines.append('(* the checkpoint the running VM, "Now", hangs under)')
    return lines


def checkpoint_tree(cps):
    """The tree as 'info checkpoints' and virsh snapshot-list --tree show
    it, with Now under the current checkpoint."""
    if not cps:
        return ['No checkpoints', 'Now']
    ids = {c['id'] for c in cps}
    children = {}
    for c in cps:
        parent = c.get('parent') if c.get('parent') in ids else None
        children.setdefault(parent, []).append(c)

    def label(c):
        return (f'{c["name"]}  ({c["id"]}, {c["type"]}, {c["consistency"]},'
                f' {c["state"]}, {time_str(c["created"])})')

    lines = []

    def walk(c, prefix, last, root):
        if root:
            lines.append(label(c))
            sub = ''
        else:
            lines.append(prefix + ('`- ' if last else '+- ') + label(c))
            sub = prefix + ('   ' if last else '|  ')
        kids = [('cp', k) for k in children.get(c['id'], [])]
        if c['current']:
            kids.append(('now', None))
        for i, (what, k) in enumerate(kids):
            end = i == len(kids) - 1
            if what == 'now':
                lines.append(sub + ('`- ' if end else '+- ') + 'Now')
            else:
                walk(k, sub, end, False)

    for c in children.get(None, []):
        walk(c, '', True, True)
    if not any(c['current'] for c in cps):
        lines.append('Now')
    return lines


def checkpoint_info(c, cps):
    names = {x['id']: x['name'] for x in cps}
    rows = [('Name', c['name']), ('Id', c['id']),
            ('Type', c['type']), ('Consistency', c['consistency'])]
    if c.get('fallback-reason'):
        rows.append(('Fallback', 'standard instead of production: '
                     + c['fallback-reason']))
    rows += [('State', c['state']), ('Created', time_str(c['created']))]
    if c.get('parent'):
        rows.append(('Parent', f'{names.get(c["parent"], "?")} ({c["parent"]})'))
    else:
        rows.append(('Parent', '(none: a root)'))
    kids = [x for x in cps if x.get('parent') == c['id']]
    rows.append(('Children', ', '.join(f'{k["name"]} ({k["id"]})' for k in kids)
                 or '(none)'))
    rows.append(('Current', 'yes (the running VM, "Now", hangs under it)'
                 if c['current'] else 'no'))
    if 'state-file-size' in c:
        rows.append(('State file', size_str(c['state-file-size'])))
    for d in c['disks']:
        extra = [d['format']]
        if 'disk-size' in d:
            extra.append(f'{size_str(d["disk-size"])} on disk')
        if 'virtual-size' in d:
            extra.append(f'{size_str(d["virtual-size"])} virtual')
        rows.append((f'Disk {d["device"]}', f'{d["filename"]} ({", ".join(extra)})'))
    w = max(len(k) for k, _ in rows) + 1
    return [f'{(k + ":").ljust(w)} {v}' for k, v in rows]


def merge_lines(merges):
    if not merges:
        return ['No merges']
    rows = []
    for m in merges:
        pct = ''
        if m['state'] in ('running', 'paused') and m.get('bytes-total'):
            pct = f'{m["bytes-done"] * 100 // m["bytes-total"]}%'
        rows.append([m['device'], m['state'], m.get('direction', ''), pct,
                     ' '.join(m['images']), m.get('top', ''),
                     m.get('reason', '')])
    return table(['Disk', 'State', 'Direction', 'Done', 'Images', 'Into',
                  'Reason'], rows)


def plan_lines(plan, cps, dry_run):
    names = {c['id']: c['name'] for c in cps}
    verb = 'Would delete' if dry_run else 'Deleted'
    lines = []
    for cid in plan['deleted']:
        lines.append(f'{verb} checkpoint {names.get(cid, "?")!r} ({cid})')
    if not plan['deleted']:
        lines.append(f'{verb} no checkpoint')
    would = 'would be ' if dry_run else ''
    for d in plan['disks']:
        for f in d['deleted']:
            lines.append(f'  disk {d["device"]}: {f} {would}deleted')
        for m in d['merges']:
            how = 'online' if m['online'] else 'offline'
            lines.append(f'  disk {d["device"]}: {" ".join(m["images"])} '
                         f'{would or "to be "}merged with {m["top"]} '
                         f'({m["direction"]} into {m["target"]}, '
                         f'{size_str(m["bytes"])}, {how})')
        for p in d['pending']:
            lines.append(f'  disk {d["device"]}: {p["filename"]} '
                         f'{would}kept as merge pending: {p["reason"]}')
    for s in plan['space']:
        lines.append(f'  space: {s["folder"]} needs {size_str(s["needed"])},'
                     f' {size_str(s["free"])} free')
    return lines
