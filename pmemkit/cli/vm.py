"""``pmemkit vm run|test|shell|build``: thin over :mod:`pmemkit.vm`."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .. import defaults
from ..errors import VmConfigError
from . import status


def _add_vm_options(p):
    g = p.add_argument_group("guest")
    pm = g.add_mutually_exclusive_group()
    pm.add_argument("--memmap", metavar="SIZE!START",
                    help=f"emulate pmem with the kernel's memmap= (default {defaults.MEMMAP})")
    pm.add_argument("--nvdimm", metavar="SIZE[,labels][,file=PATH]",
                    help="a QEMU NVDIMM of SIZE instead; its backing file is kept across runs "
                         "(default: one in the cache); 'labels' gives it a label area")
    pm.add_argument("--cxl", metavar="SIZE[,file=PATH]",
                    help="a CXL type-3 persistent memory device of SIZE (a multiple of 256M) "
                         "instead; its backing file is kept across runs (default: one in the "
                         "cache), its label area in PATH.lsa")
    g.add_argument("--ramdax", action="store_true",
                   help="make the memmap range a labelled NVDIMM (the ramdax driver; needs "
                        "--kernel debian-7.3 or another kernel with CONFIG_RAMDAX)")
    g.add_argument("--namespaces", metavar="MODES",
                   help="with --ramdax: a comma list of namespace modes, one namespace each "
                        "(e.g. fsdax,sector); the filesystems go on the first")
    g.add_argument("--persist", metavar="FILE",
                   help="keep the guest's RAM in FILE, so memmap pmem (and ramdax namespaces) "
                        "survive the guest")
    g.add_argument("--fs", metavar="LIST",
                   help="filesystems to make and mount: comma list of "
                        f"{','.join(defaults.FILESYSTEMS)} or none (default: all in fsdax mode, "
                        "none otherwise)")
    g.add_argument("--mode", choices=defaults.VM_MODES, default=defaults.NAMESPACE_MODE,
                   help=f"namespace mode (default {defaults.NAMESPACE_MODE}); sector gives "
                        "/dev/pmem0s")
    g.add_argument("--memory", metavar="SIZE", help="guest RAM (default: the memmap range's end + "
                   f"{defaults.VM_MEMORY_HEADROOM})")
    _add_kernel_options(g)
    g.add_argument("--cpus", type=int, default=defaults.VM_CPUS,
                   help=f"vCPUs (default {defaults.VM_CPUS})")
    g.add_argument("--accel", choices=defaults.VM_ACCELS, default=defaults.VM_ACCEL,
                   help="auto tries KVM and falls back to TCG (default auto)")
    sh = g.add_mutually_exclusive_group()
    sh.add_argument("--share", metavar="DIR",
                    help="host directory visible read-write in the guest at the same path "
                         "(default: the current directory)")
    sh.add_argument("--no-share", action="store_true", help="share no host directory")
    g.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set an environment variable for the command (repeatable)")
    g.add_argument("--timeout", type=float, default=defaults.VM_TIMEOUT,
                   help=f"seconds before the guest is killed (default {defaults.VM_TIMEOUT})")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    _add_project_options(p)


def _add_project_options(p):
    g = p.add_argument_group(
        "project", "what the guest adds for your project; each replaces the same key of "
        "[tool.pmemkit.vm] in the nearest pyproject.toml (repeatable, or comma lists for packages)")
    g.add_argument("--packages", action="append", metavar="LIST",
                   help="Debian packages for the guest image, e.g. gcc,make,libpmemobj-dev")
    g.add_argument("--pip", action="append", metavar="REQUIREMENT",
                   help="a pip requirement for the guest's Python, e.g. sortedcontainers or "
                        "'-e .[test]'")
    g.add_argument("--setup", action="append", metavar="COMMAND",
                   help="a shell command run in the guest before the command or tests")


def _add_kernel_options(g):
    g.add_argument("--kernel", metavar="NAME|PATH",
                   help=f"guest kernel: {', '.join(defaults.VM_KERNELS)} (default "
                        f"{defaults.VM_KERNEL}, Debian 12's 6.1; the others come from Debian "
                        "backports), or the path of a bzImage/vmlinux you built")
    g.add_argument("--modules", metavar="DIR",
                   help="the modules of a --kernel PATH (what `make modules_install "
                        "INSTALL_MOD_PATH=DIR` installed)")


def register(subparsers):
    p = subparsers.add_parser(
        "vm", help="run commands on emulated pmem in a QEMU guest",
        description="Boot a QEMU guest whose kernel has emulated persistent memory (memmap= or a "
                    "QEMU NVDIMM), ext4 and xfs mounted with -o dax, and this directory shared; "
                    "run a command, a pytest suite or a shell there.")
    sub = p.add_subparsers(dest="vm_command", metavar="ACTION")
    sub.required = True

    r = sub.add_parser("run", help="run a command in the guest; exits with its status",
                       formatter_class=status.HelpFormatter, epilog=status.PASSTHROUGH_EPILOG,
                       description="Run COMMAND in the guest; its output streams back and "
                                   "pmemkit exits with its exit status.")
    _add_vm_options(r)
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("test", help="run pytest in the guest with DAX tests required",
                       formatter_class=status.HelpFormatter, epilog=status.PASSTHROUGH_EPILOG,
                       description="Run pytest (Debian's, with pmemkit's plugin) in the guest; "
                                   f"{defaults.REQUIRE_DAX_ENV}=1 makes dax-marked tests fail "
                                   "instead of skipping.")
    _add_vm_options(t)
    t.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST ARGS")
    t.set_defaults(func=cmd_test)

    pc = sub.add_parser(
        "powercut", help="cut the power during a workload N times, checking after each reboot",
        formatter_class=status.HelpFormatter,
        description="Run WORKLOAD in a guest on persistent pmem (--nvdimm or --cxl), kill QEMU "
                    "(SIGKILL) at a chosen or random moment after it starts, boot again and run "
                    "the --check command (exit 0 = consistent); repeat for --cuts cycles. Every "
                    "store that reached the emulated media survives a cut; the guest's RAM "
                    "(page cache, unwritten metadata) does not. CPU caches and store reordering "
                    "are not simulated: that is what `pmemkit crash` explores.",
        epilog=status.epilog("example:", "  pmemkit vm powercut --nvdimm 1G --cuts 3 --seed 7 "
                             "--check 'python3 check.py /mnt/pmem-ext4/log' -- "
                             "python3 append.py /mnt/pmem-ext4/log", ""))
    _add_vm_options(pc)
    pc.add_argument("--check", required=True, metavar="COMMAND",
                    help="the check run after each reboot, split like a shell would (no shell "
                         "runs it); exit 0 means consistent")
    pc.add_argument("--cuts", type=int, default=defaults.VM_POWER_CUTS,
                    help=f"how many power cuts (default {defaults.VM_POWER_CUTS})")
    when = pc.add_mutually_exclusive_group()
    when.add_argument("--cut-after", type=float, metavar="SECONDS",
                      help="cut this many seconds after the workload starts, every cycle")
    when.add_argument("--cut-window", metavar="MIN:MAX", default=defaults.VM_POWER_CUT_WINDOW,
                      help="random cut moments in this window of seconds after the workload "
                           f"starts (default {defaults.VM_POWER_CUT_WINDOW})")
    pc.add_argument("--seed", type=int, help="seed of the random cut moments (default: random, "
                                             "printed in the report)")
    pc.add_argument("--json", action="store_true", help="print the report as JSON")
    pc.add_argument("workload", nargs=argparse.REMAINDER, metavar="-- WORKLOAD [ARGS...]")
    pc.set_defaults(func=cmd_powercut)

    s = sub.add_parser("shell", help="an interactive shell in the guest (exit it to stop the VM)")
    _add_vm_options(s)
    s.set_defaults(func=cmd_shell)

    b = sub.add_parser("build", help="build (or check) the cached kernel, root image and "
                                     "initramfs, with this project's guest layer")
    _add_kernel_options(b)
    b.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    _add_project_options(b)
    b.set_defaults(func=cmd_build)


def _parse_device(text, option, default, flags=()):
    """``SIZE[,FLAG...][,file=PATH]`` -> (size, set of flags, path)."""
    size, seen, path = None, set(), None
    for part in text.split(","):
        part = part.strip()
        if part in flags:
            seen.add(part)
        elif part.startswith("file="):
            path = part[5:]
        elif part and size is None:
            size = part
        else:
            form = "".join(f"[,{f}]" for f in flags)
            raise VmConfigError(f"cannot parse {option} {text!r}: write SIZE{form}[,file=PATH], "
                                f"e.g. {default}{',' + flags[0] if flags else ''}")
    return size or default, seen, path


def _parse_nvdimm(text):
    size, flags, path = _parse_device(text, "--nvdimm", defaults.VM_NVDIMM_SIZE, ("labels",))
    return size, "labels" in flags, path


def config_from_args(args):
    from ..vm import VmConfig
    kw = {}
    if args.nvdimm:
        kw["nvdimm"], kw["labels"], kw["nvdimm_file"] = _parse_nvdimm(args.nvdimm)
    if args.cxl:
        kw["cxl"], _, kw["cxl_file"] = _parse_device(args.cxl, "--cxl", defaults.VM_CXL_SIZE)
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise VmConfigError(f"--env {item!r}: write NAME=VALUE")
        env[name] = value
    return VmConfig(memmap=args.memmap, fs=args.fs, mode=args.mode, memory=args.memory,
                    cpus=args.cpus, accel=args.accel, share=False if args.no_share else args.share,
                    env=env, timeout=args.timeout, kernel=args.kernel, modules=args.modules,
                    ramdax=args.ramdax,
                    namespaces=args.namespaces, persist=args.persist, **kw)


def project_from_args(args, config):
    """The project of the current directory ([tool.pmemkit.vm]) with the options applied."""
    from ..vm.project import load_project
    return load_project(None, config.share, packages=args.packages, pip=args.pip, setup=args.setup)


def _progress(args):
    if getattr(args, "quiet", False):
        return None
    start = time.monotonic()
    tty = sys.stderr.isatty()
    state = {"inline": False}

    def report(message):
        line = f"[{time.monotonic() - start:6.1f}s] {message}"
        # Build tools print many lines: show them on one line that updates on a terminal.
        transient = message.startswith(("debootstrap:", "apt-get", "pip:", "native extension:"))
        if tty and transient:
            sys.stderr.write("\r\033[K" + line[: os.get_terminal_size(2).columns - 1])
            state["inline"] = True
        elif not transient or not tty:
            if state["inline"]:
                sys.stderr.write("\r\033[K")
                state["inline"] = False
            if transient and not tty and "I: Retrieving" in message:
                return  # keep CI logs short
            sys.stderr.write(f"pmemkit: {line}\n")
        sys.stderr.flush()
    return report


def _stream(name, data):
    out = sys.stdout if name == "stdout" else sys.stderr
    out.buffer.write(data)
    out.flush()


def _strip_dashes(rest):
    return rest[1:] if rest and rest[0] == "--" else rest


def cmd_run(args):
    from .. import vm
    command = _strip_dashes(args.command)
    if not command:
        raise VmConfigError("no command given: pmemkit vm run [options] -- COMMAND [ARGS...]")
    config = config_from_args(args)
    result = vm.run(config, command, stream=_stream, progress=_progress(args),
                    project=project_from_args(args, config))
    return result.returncode


def cmd_test(args):
    from .. import vm
    config = config_from_args(args)
    result = vm.test(config, _strip_dashes(args.pytest_args), stream=_stream,
                     progress=_progress(args),
                     project=project_from_args(args, config))
    return result.returncode


def cmd_powercut(args):
    import json
    import shlex

    from ..vm import powercut
    workload = _strip_dashes(args.workload)
    if not workload:
        raise VmConfigError("no workload given: pmemkit vm powercut [options] --check CMD -- "
                            "WORKLOAD [ARGS...]")
    check = shlex.split(args.check)
    report = powercut.run(config_from_args(args), workload, check, cuts=args.cuts,
                          cut_after=args.cut_after, window=args.cut_window,
                          seed=args.seed, progress=_progress(args))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(powercut.format_report(report)))
    return int(status.verdict(report.consistent, report.complete))


def cmd_shell(args):
    from .. import vm
    config = config_from_args(args)
    return vm.shell(config, progress=_progress(args), project=project_from_args(args, config))


def cmd_build(args):
    from .. import vm
    config = vm.VmConfig(kernel=args.kernel, modules=args.modules)
    image = vm.prepare(config, progress=_progress(args), project=project_from_args(args, config))
    print(f"kernel:    {image.kernel.vmlinuz}")
    print(f"initramfs: {image.initramfs}")
    print(f"root:      {image.rootfs.image}")
    return 0
