"""``pmemkit info``, ``pmemkit doctor`` and ``pmemkit demo``: thin printers over
:mod:`pmemkit.discovery` and :func:`pmemkit.map_file`."""

from __future__ import annotations

import json
import os
import sys
import tempfile

from ..cpu import FLUSH_INSTRUCTIONS
from ..discovery import approx_size
from ..units import format_size

_MARK = {"ok": "ok", "action": "->", "warning": "!!", "info": "--"}


def register(subparsers):
    p = subparsers.add_parser(
        "info", help="what this machine has for persistent memory",
        description="List nd regions, namespaces, pmem/dax devices, DAX mounts, memmap= "
                    "kernel arguments, CPU flush instructions and eADR.")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="read a tree laid out like / instead of this machine (for testing)")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser(
        "doctor", help="the next step to real DAX on this machine",
        description="Explain, for this machine, what to do next to get a DAX filesystem "
                    "(GRUB memmap= line, ndctl command, mount command, or the VM harness).")
    p.add_argument("--json", action="store_true", help="print the advice as JSON")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="diagnose a tree laid out like / instead of this machine (for testing)")
    p.set_defaults(func=cmd_doctor)

    p = subparsers.add_parser(
        "demo", help="map a file, write, persist, read back",
        description="A short tour of pmemkit.map_file: maps a 4 KiB file on a DAX mount if "
                    "there is one (else in a temporary directory), writes, persists, reads "
                    "back and shows is_pmem, granularity and flush_method.")
    p.add_argument("--dir", help="directory to create the demo file in")
    p.set_defaults(func=cmd_demo)


def _size(n):
    return "?" if n is None else format_size(n) if n % (1 << 20) == 0 else approx_size(n)


def cmd_info(args, out=None):
    from ..discovery import discover
    out = out or sys.stdout
    info = discover(args.root)
    if args.json:
        json.dump(info.to_dict(), out, indent=2)
        out.write("\n")
        return 0
    w = out.write
    w(f"kernel: {info.kernel or '?'}   RAM: {approx_size(info.ram_bytes)}   backend: "
      f"{info.backend}\n")
    if info.cpu is not None:
        have = [n for n in FLUSH_INSTRUCTIONS if getattr(info.cpu, n)]
        w(f"CPU flush: {', '.join(have) or 'none'} (best: {info.cpu.best_flush or 'none'}; "
          f"from {info.cpu.source})\n")
    w(f"native flush extension: {'yes' if info.native_flush else 'no (msync fallback)'}\n")
    w(f"eADR: {'yes' if info.eadr else 'no'}\n")
    w("memmap= kernel arguments:" + ("" if info.memmaps else " none") + "\n")
    for m in info.memmaps:
        if m.kind == "other":
            w(f"  {m.text}  (not persistent memory)\n")
        elif m.error:
            w(f"  {m.text}  INVALID: {m.error}\n")
        else:
            w(f"  {m.text}  {_size(m.memmap.size)} at {_size(m.memmap.start)}\n")
    w("regions:" + ("" if info.regions else " none") + "\n")
    for r in info.regions:
        w(f"  {r.name}  {_size(r.size)}  {r.provider or '?'}  persistence domain: "
          f"{r.persistence_domain or 'unknown'}{'  deep_flush' if r.deep_flush else ''}\n")
    w("namespaces:" + ("" if info.namespaces else " none") + "\n")
    for ns in info.namespaces:
        w(f"  {ns.name}  {ns.mode}  {_size(ns.size)}  {ns.device or '(no device)'}\n")
    w("devices:" + ("" if info.devices else " none") + "\n")
    for d in info.devices:
        dax = {True: "dax", False: "no dax", None: "dax ?"}[d.dax]
        w(f"  {d.path or d.name}  {d.kind}  {_size(d.size)}  {dax}\n")
    if info.cxl:
        w("CXL:\n")
    for c in info.cxl:
        if c.kind == "memdev":
            extra = f"serial {c.serial:#x}" if c.serial is not None else "serial ?"
        else:
            extra = {True: "committed", False: "not committed", None: "commit ?"}[c.committed]
        w(f"  {c.name}  {c.kind}  {_size(c.size)}  {extra}\n")
    w("pmem / DAX mounts:" + ("" if info.mounts else " none") + "\n")
    for m in info.mounts:
        w(f"  {m.mount_point}  {m.device}  {m.fstype}  {m.dax or 'no dax option'}\n")
    for p in info.problems:
        w(f"problem: {p.where}: {p.message}\n")
    return 0


def cmd_doctor(args, out=None):
    from ..discovery import diagnose, discover
    out = out or sys.stdout
    info = discover(args.root)
    advice = diagnose(info)
    if args.json:
        json.dump([a.to_dict() for a in advice], out, indent=2)
        out.write("\n")
        return 0
    w = out.write
    w(f"pmemkit doctor: {len(info.regions)} pmem region(s), "
      f"{len(info.dax_mounts)} DAX mount(s), RAM {approx_size(info.ram_bytes)}\n\n")
    for a in advice:
        w(f"[{_MARK.get(a.level, a.level)}] {a.title}\n")
        if a.detail:
            w(f"     {a.detail}\n")
        for c in a.commands:
            w(f"       {c}\n")
        w("\n")
    return 0


def cmd_demo(args, out=None):
    import pmemkit
    from ..discovery import dax_mount_points
    out = out or sys.stdout
    w = out.write
    directory, tmp = args.dir, None
    if directory is None:
        for mp in dax_mount_points():
            if os.access(mp, os.W_OK):
                directory = mp
                break
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="pmemkit-demo-")
        directory = tmp.name
    path = os.path.join(directory, f"pmemkit-demo-{os.getpid()}")
    message = b"hello, persistent memory"
    try:
        w(f"mapping {path} (4096 bytes)\n")
        with pmemkit.map_file(path, 4096, create=True) as pm:
            w(f"  is_pmem={pm.is_pmem}  granularity={pm.granularity}  "
              f"flush_method={pm.flush_method}\n")
            pm.write(0, message)
            pm.persist(0, len(message))
            w(f"  wrote and persisted {len(message)} bytes at offset 0\n")
            back = pm.read(0, len(message))
            w(f"  read back: {back.decode()!r}\n")
            method, is_pmem = pm.flush_method, pm.is_pmem
        ok = back == message
        w("demo " + ("succeeded" if ok else "FAILED: data read back differs") + "\n")
        if not is_pmem:
            w(f"not on pmem: persist used {method}. `pmemkit doctor` says how to get real DAX.\n")
        return 0 if ok else 1
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if tmp is not None:
            tmp.cleanup()
