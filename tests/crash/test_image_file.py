"""The checker's image file: sparse, rewritten only where images changed, and still exactly the
next image whatever the checker program did to it (it may write through its own mapping)."""

import hashlib
import os
import random
import sys
import textwrap

import pytest

from pmemkit import crash
from pmemkit.crash import checkers
from pmemkit.crash.checkers import PAGE, ImageChanges, PersistentChecker, _ImageFile

# A persistent checker that logs the SHA-256 of every image it is given (read with read(2)),
# then damages the file in the way argv[2] names, cycling through them when it is "all".
SCRIBBLER = textwrap.dedent("""\
    import ctypes, hashlib, mmap, os, sys
    log, mode = sys.argv[1], sys.argv[2]
    PAGE = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]

    def data_pages(fd, size):
        out, off = [], 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.extend(range(d // PAGE, -(-h // PAGE)))
            off = h
        return out

    def scribble(path, how, n):
        size = os.path.getsize(path)
        fd = os.open(path, os.O_RDWR)
        try:
            data = data_pages(fd, size)
            holes = sorted(set(range(size // PAGE)) - set(data))
            if how == "hole" and holes:          # a store into a hole, through a mapping
                with mmap.mmap(fd, size) as m:
                    m[holes[n % len(holes)] * PAGE + 100] = 0x5A
            elif how == "hole-zeros" and holes:  # zeros into a hole: allocates it all the same
                with mmap.mmap(fd, size) as m:
                    p = holes[n % len(holes)] * PAGE
                    m[p:p + 8] = bytes(8)
            elif how == "zeros" and data:        # zeros over data
                with mmap.mmap(fd, size) as m:
                    p = data[n % len(data)] * PAGE
                    m[p:p + PAGE] = bytes(PAGE)
            elif how == "punch" and data:        # a data page becomes a hole
                libc.fallocate(fd, 3, data[n % len(data)] * PAGE, PAGE)   # PUNCH_HOLE|KEEP_SIZE
            elif how == "write":                 # write(2) anywhere
                os.pwrite(fd, b"scribble", (n * 7919 * 8) % (size - 8))
            elif how == "truncate":
                os.ftruncate(fd, size // 3)
            elif how == "truncate-extend":       # same inode, same size, every page a hole
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
            elif how == "extend":
                os.ftruncate(fd, size + PAGE)
        finally:
            os.close(fd)
        if how == "replace":                     # a new file renamed over the image
            with open(path + ".new", "wb") as f:
                f.write(os.urandom(size))
            os.replace(path + ".new", path)
        elif how == "unlink":
            os.unlink(path)

    HOWS = ["hole", "hole-zeros", "zeros", "punch", "write", "truncate", "truncate-extend",
            "extend", "replace", "unlink"]
    n = 0
    for line in sys.stdin:
        path = line.rstrip("\\n").split("\\t")[0]
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        with open(log, "a") as f:
            f.write(digest + "\\n")
        scribble(path, HOWS[n % len(HOWS)] if mode == "all" else mode, n)
        n += 1
        sys.stdout.write("0\\n")
        sys.stdout.flush()
""")

HOWS = ["none", "hole", "hole-zeros", "zeros", "punch", "write", "truncate", "truncate-extend",
        "extend", "replace", "unlink", "all"]


@pytest.fixture
def scribbler(tmp_path):
    path = tmp_path / "scribbler.py"
    path.write_text(SCRIBBLER)
    log = tmp_path / "digests"

    def make(how):
        log.write_text("")
        return [sys.executable, str(path), str(log), how]

    make.digests = lambda: log.read_text().split()
    return make


def _images(npages=256, count=40, seed=7):
    """Mostly-zero images, each changing a few pages of the previous one (data to zero, zero to
    data, data to other data), with the pages that changed."""
    rng = random.Random(seed)
    img = bytearray(npages * PAGE)
    for p in rng.sample(range(npages), 6):
        img[p * PAGE:(p + 1) * PAGE] = rng.randbytes(PAGE)
    out = [(bytes(img), None)]
    for _ in range(count):
        changed = set()
        for p in rng.sample(range(npages), 3):
            what = rng.randrange(3)
            if what == 0:
                img[p * PAGE:(p + 1) * PAGE] = bytes(PAGE)
            elif what == 1:
                img[p * PAGE:(p + 1) * PAGE] = rng.randbytes(PAGE)
            else:
                at = p * PAGE + rng.randrange(PAGE // 8) * 8
                img[at:at + 8] = rng.randbytes(8)
            changed.add(p)
        out.append((bytes(img), frozenset(changed)))
    return out


def _data_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size, out, off = os.fstat(fd).st_size, set(), 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.update(range(d // PAGE, -(-h // PAGE)))
            off = h
        return out
    finally:
        os.close(fd)


def _nonzero_pages(image):
    return {p for p in range(len(image) // PAGE) if any(image[p * PAGE:(p + 1) * PAGE])}


def test_the_image_file_is_sparse_and_follows_the_changed_pages():
    """Pages that never held data are holes; with the hint each image is exact."""
    f = _ImageFile()
    source = object()
    ever = set()
    try:
        for seq, (image, changed) in enumerate(_images()):
            path = f.write(image, ImageChanges(source, seq, changed))
            with open(path, "rb") as fh:
                assert fh.read() == image, seq
            ever |= _nonzero_pages(image)
            if f.dir.startswith("/dev/shm"):    # tmpfs reports holes: data only where some
                # image had data (a page that held data is zeroed in place, not punched out)
                assert _nonzero_pages(image) <= _data_pages(path) <= ever, seq
    finally:
        f.cleanup()


def test_a_hint_from_another_sequence_is_not_trusted():
    """An ImageChanges that does not follow the image written last is ignored (every page is
    compared): a wrong, stale or foreign hint cannot leave the file behind."""
    f = _ImageFile()
    source = object()
    a = bytes(PAGE) + b"a" * PAGE + bytes(1 << 20)
    b = b"b" * PAGE + bytes(PAGE) + bytes(1 << 20)
    try:
        f.write(a, ImageChanges(source, 1, None))
        for hint in (ImageChanges(source, 3, frozenset()),       # a gap in the sequence
                     ImageChanges(object(), 2, frozenset()),     # another source
                     None):                                      # no hint at all
            path = f.write(a)
            path = f.write(b, hint)
            with open(path, "rb") as fh:
                assert fh.read() == b
            f.write(a, ImageChanges(source, 1, None))
    finally:
        f.cleanup()


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("where", ["/dev/shm", "tmp_path"])
def test_the_checker_gets_exactly_each_image_whatever_it_does_to_its_file(scribbler, how, where,
                                                                          tmp_path, monkeypatch):
    """A persistent checker that writes into holes, writes zeros over data, punches holes,
    truncates, extends, replaces or unlinks its image file: every image it reads is still
    exactly the next image (its SHA-256 against the dense image). On tmpfs and on the file
    system of the temp dir (the fallback when /dev/shm is not writable)."""
    if where == "tmp_path":
        monkeypatch.setattr(checkers, "_temp_base", lambda: str(tmp_path))
    elif not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    images = _images()
    check = PersistentChecker(scribbler(how))
    source = object()
    try:
        for seq, (image, changed) in enumerate(images):
            assert check(image, changes=ImageChanges(source, seq, changed))
    finally:
        check.close()
    assert scribbler.digests() == [hashlib.sha256(img).hexdigest() for img, _ in images]


def _workload(pm):
    """Stores on a few pages of a 1 MiB region, some flushed, some left pending."""
    for i in range(6):
        off = (i * 37 % 256) * PAGE + 64 * i
        pm.write(off, bytes([i + 1]) * 24)
        pm.write(off + 4096 * 3, bytes([0xA0 + i]) * 8)
        pm.flush(off, 24)
        pm.drain()


@pytest.mark.parametrize("workers", [1, 2])
def test_explore_gives_an_external_checker_the_same_images_as_an_in_process_one(scribbler,
                                                                                  workers):
    """The explorer's hints (the pages each state changed) through a checker that damages its
    file in every way: the same images, hash for hash, as an in-process checker sees; with
    workers the images reach them as changed pages only."""
    seen = []
    ref = crash.explore(_workload, lambda img: seen.append(hashlib.sha256(img).hexdigest()),
                        size=1 << 20, progress=None)
    assert ref.ok and ref.complete and len(seen) == ref.unique_images > 20, ref.unique_images
    r = crash.explore(_workload, PersistentChecker(scribbler("all")), size=1 << 20,
                      workers=workers, progress=None)
    assert r.ok and r.unique_images == ref.unique_images
    got = scribbler.digests()
    assert (got if workers == 1 else sorted(got)) == (seen if workers == 1 else sorted(seen))
    one_shot = crash.ExternalChecker(["true"])
    assert crash.explore(_workload, one_shot, size=1 << 20, workers=workers, progress=None).ok


def test_shifted_changes_follow_a_files_offset():
    ch = ImageChanges("s", 4, frozenset({0, 3, 4, 9}))
    assert ch.shifted(3 * PAGE, 2 * PAGE) == ImageChanges("s", 4, frozenset({0, 1}))
    assert ch.shifted(PAGE + 8, PAGE).pages is None     # not page aligned: every page
    assert ImageChanges("s", 1, None).shifted(0, PAGE).pages is None


def test_workers_get_no_whole_images(tmp_path):
    """With workers and sections (pmemcheck's -x) each image went to the workers whole: 256
    images of a 64 MiB region per batch (16 GiB) failed with MemoryError under a 3 GiB
    address-space limit. Now workers rebuild their images from the point log, and the verdict,
    the violation's image and its persisted image are those of one worker. In a process of its
    own."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""\
        import resource
        from pmemkit import crash
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

        def work(pm):
            for i in range(9):
                pm.write(i * 4096 * 7 + 8 * i, bytes([i + 1]) * 8)
            pm.persist(0, 1 << 20)

        def check(img):
            # one inconsistent image: every store but the second one durable
            return not (img[28672 + 8] == 0
                        and all(img[i * 28672 + 8 * i] == i + 1 for i in (0, *range(2, 9))))

        def sections(point):
            return "exhaustive"

        r1 = crash.explore(work, check, size=64 << 20, progress=None, sections=sections)
        r2 = crash.explore(work, check, size=64 << 20, workers=2, progress=None,
                           sections=sections)
        print(r1.unique_images, r2.unique_images, r1.violation_count, r2.violation_count,
              r1.violations[0].image == r2.violations[0].image,
              r1.violations[0].persisted == r2.violations[0].persisted)
    """))
    import subprocess
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n1, n2, v1, v2, same_image, same_persisted = proc.stdout.split()
    assert n1 == n2 and int(n1) == 512 and v1 == v2 == "1", proc.stdout
    assert same_image == same_persisted == "True", proc.stdout
