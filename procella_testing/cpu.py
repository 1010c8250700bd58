"""CPU time per component of a run, from /proc (Linux), standard library only.

On a small machine the load generator, the proxy, the replicas and PostgreSQL share the
same cores, so "where is the bottleneck" starts with who used the CPU. A component is a
set of root processes and all their live descendants; a root's reaped children count
too (PostgreSQL backends that came and went are reaped by the postmaster).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TICK = float(os.sysconf("SC_CLK_TCK"))
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Proc:
    ppid: int
    sid: int
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: children that exited and were waited for
    rss: int  # bytes
    comm: str


def scan() -> dict[int, Proc]:
    """Every process on the machine, from one pass over /proc."""
    found: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone since listdir
            continue
        # comm is in parentheses and may hold spaces or ')': split after the last ')'.
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 of proc(5) (state): ppid is field 4, session 6, utime 14,
        # stime 15, cutime 16, cstime 17, rss (pages) 24.
        utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
        found[int(entry)] = Proc(
            ppid=int(fields[1]),
            sid=int(fields[3]),
            own=utime + stime,
            reaped=cutime + cstime,
            rss=int(fields[21]) * PAGE,
            comm=comm,
        )
    return found


def descendants(procs: Mapping[int, Proc], roots: Iterable[int]) -> set[int]:
    """The roots that are alive and all their live descendants."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    seen: set[int] = set()
    todo = [pid for pid in roots if pid in procs]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def tree_cpu(procs: Mapping[int, Proc], roots: Iterable[int]) -> float:
    """CPU seconds of the roots' live trees, plus what the roots' exited children used."""
    roots = list(roots)
    members = descendants(procs, roots)
    return sum(procs[p].own for p in members) + sum(procs[p].reaped for p in roots if p in procs)


def component_seconds(roots: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named component."""
    procs = scan()
    return {name: tree_cpu(procs, pids) for name, pids in roots.items()}


def children_by_command(parent: int, commands: Mapping[str, str]) -> dict[str, list[int]]:
    """Direct children of ``parent`` grouped by component, matched on their command name
    (e.g. {"caddy": "caddy"}); a prefix match, since Linux cuts comm at 15 characters."""
    out: dict[str, list[int]] = {name: [] for name in commands}
    for pid, proc in scan().items():
        if proc.ppid != parent:
            continue
        for name, command in commands.items():
            if proc.comm.startswith(command[:15]):
                out[name].append(pid)
    return out


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        values = [int(x) / TICK for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def interrupt_seconds() -> float:
    """Time all cores spent in interrupt handlers, mostly softirq: on loopback every
    request's network work lands here, charged to no process."""
    with open("/proc/stat") as f:
        values = [int(x) / TICK for x in f.readline().split()[1:9]]
    return values[5] + values[6]


def own_seconds() -> float:
    """This process (every thread: the in-process S3 server, the samplers)."""
    times = os.times()
    return times.user + times.system
