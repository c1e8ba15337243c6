"""``pmemkit btt info|check PATH`` and ``pmemkit btt crash-suite``."""

from __future__ import annotations

import json
import sys

from .status import HelpFormatter, count, epilog, verdict


def _offset(text):
    return count(text, 0)


def register(subparsers):
    p = subparsers.add_parser(
        "btt", help="inspect and check BTT images; run the atomic-sector crash suite",
        description="Block Translation Table tools (Linux nd_btt / libpmemblk format).")
    sub = p.add_subparsers(dest="btt_command", metavar="SUBCOMMAND")
    sub.required = True

    def image_args(q):
        q.add_argument("path", metavar="PATH",
                       help="a libpmemblk pool, a namespace image (e.g. a QEMU NVDIMM backing "
                            "file) or any file holding a BTT")
        q.add_argument("--offset", type=_offset, default=None,
                       help="byte offset of the first arena's info block (default: found "
                            "automatically from either copy of the info block: 8 KiB in pmemblk "
                            "pools, 4 KiB in label-less namespaces)")
        q.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser("info", help="print a BTT's layout (like pmempool info)",
                       description="Print the layout of the BTT in PATH: arenas, offsets, map "
                                   "states, damaged info blocks. The image is opened read-only "
                                   "(a read-only file works) and never modified.")
    image_args(q)
    q.set_defaults(func=cmd_info)
    q = sub.add_parser("check", help="check a BTT's consistency (like pmempool check)",
                       description="Check the BTT in PATH (info blocks and backups, flog, map: "
                                   "every block referenced exactly once). Read-only (a read-only "
                                   "file works).",
                       formatter_class=HelpFormatter, epilog=epilog())
    image_args(q)
    q.set_defaults(func=cmd_check)

    q = sub.add_parser(
        "crash-suite",
        help="show BTT sector atomicity under every crash state, and raw mode tearing",
        description="Run sector-write workloads under pmemkit.crash at every persistence point, "
                    "through the BTT and in raw mode (memcpy + persist in place). Prints states "
                    "checked, torn sectors and lost writes per workload. OK when BTT never tore "
                    "or lost a write and raw mode tore in every workload, with every crash state "
                    "explored.",
        formatter_class=HelpFormatter, epilog=epilog())
    from ..btt.crashsuite import WORKLOADS, SuiteConfig
    from ..defaults import CRASH_MODELS
    d = SuiteConfig()
    q.add_argument("--workload", action="append", choices=WORKLOADS,
                   help="run only this workload (repeatable; default: all)")
    q.add_argument("--writes", type=count, default=d.writes,
                   help=f"operations per workload (default {d.writes})")
    q.add_argument("--lbasize", type=count, default=d.lbasize,
                   help=f"sector size (default {d.lbasize})")
    q.add_argument("--nfree", type=count, default=d.nfree,
                   help=f"lanes of the BTT (default {d.nfree})")
    q.add_argument("--model", default=d.model, choices=CRASH_MODELS,
                   help=f"persistency model (default {d.model})")
    q.add_argument("--engine", default=d.engine, help="crash engine (default auto)")
    q.add_argument("--max-states", type=count, default=None,
                   help="stop each exploration after N states (the verdict is then incomplete)")
    q.add_argument("--seed", type=int, default=d.seed)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_crash_suite)


def _open(args):
    from ..btt import Btt, locate, open_pmemblk
    from ..btt.pmemblk import SIGNATURE
    from ..errors import BttCorruptError, MappingError

    try:
        with open(args.path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise MappingError(f"cannot read {args.path}: {exc.strerror or exc}; "
                           f"give the path of a BTT image or a libpmemblk pool") from None
    if args.offset is None and head == SIGNATURE:
        return open_pmemblk(args.path, readonly=True)
    offset = args.offset
    if offset is None:
        found = locate(args.path)
        if not found:
            raise BttCorruptError(
                f"no valid BTT info block (primary or backup) found for a BTT starting in the "
                f"first MiB of {args.path}; give --offset if the BTT starts later")
        offset = found[0]
    return Btt.open(args.path, offset, readonly=True)


def _open_quiet(args):
    """Open read-only; a backup-info fallback is reported in the output, not as a warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _open(args)


def cmd_info(args, out=None):
    out = out or sys.stdout
    b = _open_quiet(args)
    try:
        info = b.info()
        info["messages"] = b.messages
    finally:
        b.close()
    if args.json:
        json.dump(info, out, indent=2)
        out.write("\n")
        return 0
    w = out.write
    w(f"BTT at offset {info['offset']} (0x{info['offset']:x}): version {info['version']}, "
      f"lbasize {info['lbasize']}, {info['nlba']} blocks, {len(info['arenas'])} arena(s), "
      f"{info['nlane']} lanes\n")
    for m in info["messages"]:
        w(f"note: {m}\n")
    for a in info["arenas"]:
        w(f"\n[arena {a['index']}] at offset {a['offset']} (0x{a['offset']:x})\n")
        damage = a["info_damage"]
        rows = [("UUID", a["uuid"]), ("Parent UUID", a["parent_uuid"]),
                ("Flags", f"0x{a['flags']:x}"), ("Version", a["version"]),
                ("External LBA size", a["external_lbasize"]),
                ("External LBA count", a["external_nlba"]),
                ("Internal LBA size", a["internal_lbasize"]),
                ("Internal LBA count", a["internal_nlba"]), ("Free blocks", a["nfree"]),
                ("Next arena offset", f"0x{a['nextoff']:x}"),
                ("Data offset", f"0x{a['dataoff']:x}"), ("Map offset", f"0x{a['mapoff']:x}"),
                ("Flog offset", f"0x{a['flogoff']:x}"),
                ("Backup info offset", f"0x{a['infooff']:x}"),
                ("Checksum", f"0x{a['checksum']:016x}"),
                ("Primary info block", f"DAMAGED: {damage['primary']}" if damage["primary"]
                 else "intact"),
                ("Backup info block", f"DAMAGED: {damage['backup']}" if damage["backup"]
                 else "intact"),
                ("Flog slots", ",".join(str(s) for s in a["flog_slots"])),
                ("Map entries", ", ".join(f"{k} {v}" for k, v in a["map"].items()))]
        if a["read_only"]:
            rows.append(("Read-only", a["read_only"]))
        for k, v in rows:
            w(f"  {k:<20}: {v}\n")
    return 0


def cmd_check(args, out=None):
    out = out or sys.stdout
    b = _open_quiet(args)
    try:
        problems = b.check()
        offset = b.offset
    finally:
        b.close()
    if args.json:
        json.dump({"path": args.path, "offset": offset, "consistent": not problems,
                   "problems": problems}, out, indent=2)
        out.write("\n")
    else:
        for p in problems:
            out.write(f"{args.path}: {p}\n")
        out.write(f"{args.path}: {'consistent' if not problems else 'NOT consistent'}\n")
    return verdict(not problems)


def cmd_crash_suite(args, out=None):
    from ..btt import crashsuite as cs

    out = out or sys.stdout
    cfg = cs.SuiteConfig(lbasize=args.lbasize, nfree=args.nfree, writes=args.writes,
                         model=args.model, engine=args.engine, max_states=args.max_states,
                         seed=args.seed)
    workloads = tuple(args.workload) if args.workload else cs.WORKLOADS
    rows = cs.run_suite(cfg, workloads)
    btt_ok = all(r.ok for r in rows if r.mode == "btt")
    raw_tore = all(r.torn_states > 0 for r in rows if r.mode == "raw")
    complete = all(r.complete for r in rows)
    if args.json:
        json.dump({"btt_atomic": btt_ok, "raw_tore": raw_tore, "complete": complete,
                   "rows": [{k: getattr(r, k) for k in (
                       "workload", "mode", "states", "images", "crash_points", "torn_states",
                       "torn_sectors", "lost_states", "lost_writes", "inconsistent", "complete",
                       "examples")} for r in rows]}, out, indent=2)
        out.write("\n")
    else:
        out.write(cs.format_table(rows) + "\n")
        out.write(f"BTT: {'no torn sectors, no lost writes' if btt_ok else 'VIOLATIONS'}; "
                  f"raw mode: "
                  f"{'tore in every workload' if raw_tore else 'did NOT tear everywhere'}"
                  f"{'' if complete else '; INCOMPLETE: not every crash state was explored'}\n")
        for r in rows:
            if r.mode == "btt" and not r.ok:
                for e in r.examples:
                    out.write(f"  btt/{r.workload}: {e}\n")
    return verdict(btt_ok and raw_tore, complete)
