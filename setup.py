"""Builds the optional native parts: flush primitives (pmemkit._flush), page write
tracking for the crash simulator (pmemkit.crash._dirty) and the LD_PRELOAD interposer of
``pmemkit crash run`` (pmemkit._interpose).

All are optional: without a C compiler (or if a build fails) ``pip install`` still
succeeds; pmemkit then falls back to msync (``pmemkit doctor`` says so), the crash
simulator to diffing the whole region at each persistence point, and ``pmemkit crash
run`` says the interposer was not built.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            print(f"pmemkit: native flush primitives not built ({exc}); "
                  f"falling back to msync", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # compiler present but the build failed
            fallback = ("`pmemkit crash run` unavailable" if ext.name == "pmemkit._interpose"
                        else "falling back to msync")
            print(f"pmemkit: could not build {ext.name} ({exc}); {fallback}", file=sys.stderr)


setup(
    ext_modules=[Extension("pmemkit._flush", sources=["pmemkit/_flush.c"],
                           extra_compile_args=["-O2"]),
                 Extension("pmemkit.crash._dirty", sources=["pmemkit/crash/_dirty.c"],
                           extra_compile_args=["-O2"]),
                 # the LD_PRELOAD interposer of `pmemkit crash run`: a plain shared library
                 # (no Python symbols), loaded into the traced program, never imported
                 Extension("pmemkit._interpose", sources=["pmemkit/_interpose.c"],
                           extra_compile_args=["-O2", "-pthread", "-Wall", "-Wextra",
                                               "-Wno-unused-parameter"],
                           extra_link_args=["-pthread", "-ldl"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
