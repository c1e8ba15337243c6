"""The one source of truth for pmemkit's defaults.

The VM harness, the CLI, ``pmemkit doctor``, the Ansible role
(``ansible/roles/pmem/defaults/main.yml``, checked against this module by the
test suite) and the docs all take their defaults from here.
"""

#: pmemkit's version (the package's ``__version__``; pyproject.toml reads it from here).
VERSION = "0.1.0"

#: The emulated-pmem kernel argument: ``memmap=SIZE!OFFSET`` reserves SIZE bytes
#: of RAM starting at physical address OFFSET as persistent memory (e820 type 12).
MEMMAP = "4G!12G"

#: The small configuration the test suite boots under TCG.
MEMMAP_SMALL = "512M!1G"

#: Namespace mode the harness and the sandbox put /dev/pmem0 in.
NAMESPACE_MODE = "fsdax"

#: Filesystems made on emulated pmem, in order, with the mount point of each.
FILESYSTEMS = ("ext4", "xfs")
MOUNT_POINTS = {"ext4": "/mnt/pmem-ext4", "xfs": "/mnt/pmem-xfs"}
MOUNT_OPTIONS = "dax"

#: Smallest partition (MiB) each filesystem gets on the pmem device: mkfs.xfs refuses less
#: than 300 MiB. The guest's init script and the Ansible role repeat them (a test pins them).
MIN_FS_MIB = {"ext4": 16, "xfs": 300}
#: Partition table written on the pmem device, by the guest and by the Ansible role.
PARTITION_TABLE = "gpt"

#: Extra mkfs arguments: xfs reflink and DAX are refused together before Linux 6.x.
MKFS_OPTIONS = {"ext4": ("-F", "-q", "-b", "4096"), "xfs": ("-f", "-q", "-m", "reflink=0")}

#: Environment variable the guest (or a user) sets to tell tests where DAX mounts are
#: (``os.pathsep``-separated directories).
DAX_DIRS_ENV = "PMEMKIT_DAX_DIRS"

#: Environment variable that turns "skip: no DAX here" into a test failure.
REQUIRE_DAX_ENV = "PMEMKIT_REQUIRE_DAX"

#: Environment variable: ``1`` treats every mapping as pmem (CPU flush path), ``0`` never.
FORCE_PMEM_ENV = "PMEMKIT_FORCE_PMEM"

#: Environment variable forcing a mapping's flush method (clwb, clflushopt, clflush, none, msync).
FLUSH_ENV = "PMEMKIT_FLUSH"

#: Environment variable: ``1`` makes non-temporal copies use AVX-512 (read by _flush.c at import).
AVX512F_ENV = "PMEMKIT_AVX512F"

# --- crash simulator -----------------------------------------------------------
#: The persistency models, the default first (CLI choices and the tracer read this).
CRASH_MODELS = ("x86", "x86-line", "eadr")
#: Engine "auto": explore a crash point exhaustively while it has at most this many states...
CRASH_AUTO_EXHAUSTIVE_STATES = 1 << 16
#: ...else bounded with the largest k (<= CRASH_BOUNDED_K) giving at most this many states, plus
#: random samples.
CRASH_AUTO_BOUNDED_STATES = 4096
#: Default k of the bounded engine (Chipmunk's choice) and sample count of the random engine.
CRASH_BOUNDED_K = 2
CRASH_RANDOM_SAMPLES = 256
#: From this image size up, the explorer notes the pages each crash image changed, and a
#: checker's image file is kept sparse and rewritten only there (plus the pages holding data);
#: smaller images are compared whole, which costs less than the bookkeeping.
CRASH_NOTED_IMAGE_BYTES = 1 << 20
#: Exploration on an executor (workers, Dask) cuts the distinct crash images into tasks sized
#: from the checker's measured speed so that a task takes about this many seconds on a worker.
CRASH_TASK_SECONDS = 0.25
#: Images per task before any task has been timed, and the fewest per task after.
CRASH_TASK_MIN_STATES = 8
#: The most images per task.
CRASH_TASK_STATES = 16384
#: Size of the traced region when explore() gets neither size nor initial contents.
CRASH_DEFAULT_SIZE = 4096
#: engine="exhaustive" refuses a crash point with more states than this (without max_states).
CRASH_EXHAUSTIVE_MAX_STATES = 1 << 24
#: Largest image (all registered files of a pmemcheck log together) pmemkit explores; the traced
#: region keeps three copies of it in memory.
CRASH_MAX_LOG_IMAGE = 4 << 30
#: Prefix of the per-run directory (on /dev/shm, else the temp dir) holding checkers' image files.
CRASH_TEMP_PREFIX = "pmemkit-crash-"
#: A directory of that prefix that no live process holds locked and that has not changed for this
#: many seconds is left over from a run that was killed (SIGKILL, SIGTERM): the next run removes it.
CRASH_STALE_TEMP_SECONDS = 300
#: Where each registered file of a pmemcheck log starts in the explored image (a multiple of this).
CRASH_FILE_ALIGN = 4096
#: The environment variable (and pm.record() key) holding the markers seen so far, joined by "|",
#: for external checkers (PMDK's pmreorder sets it; its pmreorder_stack checker reads it).
MARKERS_ENV = "PMREORDER_MARKERS"
#: PMDK's switch (value "1") that makes libpmem's copy and set functions markers NAME.BEGIN and
#: NAME.END in a pmemcheck log; the interposer honours it too (pmemkit/_interpose.c; pinned).
EMIT_LOG_ENV = "PMREORDER_EMIT_LOG"

#: Environment variables of the LD_PRELOAD interposer (pmemkit/_interpose.c repeats them; a test
#: pins them equal): the trace file's path, and the pid of the one process that records.
INTERPOSE_TRACE_ENV = "PMEMKIT_TRACE"
INTERPOSE_OWNER_ENV = "PMEMKIT_TRACE_PID"

# --- VM harness (pmemkit vm) ---------------------------------------------------
#: Debian metapackage naming the guest kernel (generic flavour: the cloud kernel has no 9p).
VM_KERNEL_METAPACKAGE = "linux-image-amd64"
#: Guest kernels by name: the Debian suite whose generic amd64 kernel is used (None: the host's
#: own apt sources, i.e. Debian 12's 6.1) and the kernel series it must be. Backports suites are
#: read through pmemkit's own apt configuration in the cache (the host's /etc/apt is not touched).
VM_KERNELS = {"debian": (None, "6.1"),
              "debian-6.12": ("bookworm-backports", "6.12"),
              "debian-7.3": ("trixie-backports", "7.3")}
VM_KERNEL = "debian"
#: Seconds a backports package list in the cache is used before `apt-get update` reads it again.
VM_KERNEL_LISTS_MAX_AGE = 86400
#: Kernel options (CONFIG_*) the guest needs, by feature; a kernel whose config lacks one (neither
#: =y nor =m) is refused before it boots.
VM_KERNEL_OPTIONS = {
    "guest": ("BLK_DEV_INITRD", "VIRTIO_PCI", "VIRTIO_BLK", "NET_9P_VIRTIO", "9P_FS", "EXT4_FS"),
    "pmem": ("LIBNVDIMM", "BLK_DEV_PMEM", "FS_DAX", "ZONE_DEVICE"),
    "memmap": ("X86_PMEM_LEGACY",),
    "nvdimm": ("ACPI_NFIT",),
    "cxl": ("CXL_BUS", "CXL_PCI", "CXL_ACPI", "CXL_MEM", "CXL_PMEM", "CXL_REGION"),
    "sector": ("BTT",),
    "ramdax": ("RAMDAX",),
    "xfs": ("XFS_FS",),
}
#: Debian suite and mirror of the guest root filesystem (debootstrap --variant=minbase).
VM_SUITE = "bookworm"
#: The Python version of VM_SUITE's python3 (a boot test checks it against the built image).
VM_SUITE_PYTHON = "3.11"
VM_MIRROR = "http://deb.debian.org/debian"
#: Packages in the guest root filesystem on top of minbase.
VM_PACKAGES = ("python3", "python3-numpy", "python3-pytest", "python3-psutil", "python3-pyudev",
               "python3-hypothesis", "python3-tqdm", "ndctl", "xfsprogs", "e2fsprogs", "fdisk",
               "kmod", "util-linux", "procps")
#: Guest namespace modes `pmemkit vm` accepts.
VM_MODES = ("fsdax", "sector", "raw")
#: Virtual CPUs of the guest, and the accelerator choice (auto = try KVM, fall back to TCG).
VM_CPUS = 2
VM_ACCEL = "auto"
VM_ACCELS = ("auto", "kvm", "tcg")
#: Guest RAM left for the guest itself on top of the end of the memmap range / the NVDIMM.
VM_MEMORY_HEADROOM = "1G"
#: Smallest guest RAM outside the emulated pmem (the kernel, python3 and numpy must fit).
VM_MIN_FREE_MEMORY = "512M"
#: Default NVDIMM size and label area (QEMU nvdimm label-size).
VM_NVDIMM_SIZE = "1G"
#: An NVDIMM's size is a multiple of this (the fsdax namespace alignment).
VM_NVDIMM_ALIGN = 16 << 20
VM_NVDIMM_LABEL_SIZE = "128K"
#: Default CXL type-3 device size, its (non-zero) serial number and the fixed memory window.
VM_CXL_SIZE = "512M"
#: A CXL device's size is a multiple of this (the CXL region granularity).
VM_CXL_GRANULARITY = 256 << 20
VM_CXL_SERIAL = "0x5eed"
VM_CXL_WINDOW = "4G"
#: `pmemkit vm powercut`: cuts per run and the window (seconds after the workload starts) of
#: the random cut moments.
VM_POWER_CUTS = 3
VM_POWER_CUT_WINDOW = "1:10"
#: Seconds `pmemkit vm run/test` waits for the guest before killing QEMU.
VM_TIMEOUT = 1800
#: Keys of ``[tool.pmemkit.vm]`` in a project's pyproject.toml: Debian packages for the guest
#: image, pip requirements for the guest's Python, shell commands run in the guest first.
VM_PROJECT_KEYS = ("packages", "pip", "setup")
#: Debian packages a guest layer adds when it installs pip requirements / rebuilds pmemkit's
#: native extension for the guest's Python.
VM_PIP_PACKAGES = ("python3-pip", "ca-certificates")
VM_NATIVE_BUILD_PACKAGES = ("gcc", "libc6-dev", "python3-dev")
#: Packages a guest layer adds beside a compiler (the image has no Recommends: gcc alone cannot
#: compile a program that includes <sys/types.h>).
VM_COMPILER_COMPANIONS = {"gcc": ("libc6-dev",), "g++": ("libc6-dev",), "clang": ("libc6-dev",),
                          "cpp": ("libc6-dev",)}
#: Environment variable overriding the cache directory of kernels, guest images and disks.
CACHE_DIR_ENV = "PMEMKIT_CACHE_DIR"
#: Environment variable set (to 1) for a persistent checker: it speaks the line protocol.
CHECK_PROTOCOL_ENV = "PMEMKIT_CHECK_PROTOCOL"
#: Environment variable naming an extra directory searched for pmemkit's native extension
#: (set in the guest when the extension was rebuilt for the guest's Python).
NATIVE_DIR_ENV = "PMEMKIT_NATIVE_DIR"
#: Seconds the KVM probe may take before `--accel auto` falls back to TCG.
VM_KVM_PROBE_TIMEOUT = 10
