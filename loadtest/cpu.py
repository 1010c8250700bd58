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


@dataclass(frozen=True)
class _Proc:
    ppid: int
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: children that exited and were waited for
    comm: str


def _processes() -> dict[int, _Proc]:
    found: dict[int, _Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone since listdir
            continue
        # comm is in parentheses and may hold spaces: split after the last ')'.
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is state (field 3 of proc(5)); utime is field 14, so fields[11].
        utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
        found[int(entry)] = _Proc(int(fields[1]), utime + stime, cutime + cstime, comm)
    return found


def _descendants(procs: Mapping[int, _Proc], roots: Iterable[int]) -> set[int]:
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


def component_seconds(roots: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named component."""
    procs = _processes()
    out: dict[str, float] = {}
    for name, pids in roots.items():
        pids = list(pids)
        members = _descendants(procs, pids)
        out[name] = sum(procs[p].own for p in members) + sum(
            procs[p].reaped for p in pids if p in procs
        )
    return out


def children_by_command(parent: int, commands: Mapping[str, str]) -> dict[str, list[int]]:
    """Direct children of ``parent`` grouped by component, matched on their command name
    (e.g. {"caddy": "caddy"}); a prefix match, since Linux cuts comm at 15 characters."""
    out: dict[str, list[int]] = {name: [] for name in commands}
    for pid, proc in _processes().items():
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
