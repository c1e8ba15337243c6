"""Builds the optional native flush primitives (pmemkit._flush).

The extension is optional: without a C compiler (or if it fails to build)
``pip install`` still succeeds and pmemkit falls back to msync; ``pmemkit doctor``
says so.
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
            print(f"pmemkit: could not build {ext.name} ({exc}); falling back to msync",
                  file=sys.stderr)


setup(
    ext_modules=[Extension("pmemkit._flush", sources=["pmemkit/_flush.c"],
                           extra_compile_args=["-O2"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
