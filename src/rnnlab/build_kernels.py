"""Build rnnlab's C++ scan kernels (``src/rnnlab/csrc/scan.cpp``) into ``rnnlab/_scan_ext*.so``.

Run once at install time (``make install`` does it): ``python -m rnnlab.build_kernels``. Nothing
compiles at import or test time; without the built extension :mod:`rnnlab.kernels` falls back to
its pure-torch autograd functions (same numbers, slower at small sizes).
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE = PACKAGE_DIR / "csrc" / "scan.cpp"


def build(verbose: bool = False) -> Path:
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    # -fopenmp: at::parallel_for splits the batch rows over torch's threads (torch's own libgomp is
    # the one loaded); -march=native: built on the machine that runs it, AVX2/FMA when present
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    ext = CppExtension("rnnlab._scan_ext", [str(SOURCE)], extra_compile_args=flags, extra_link_args=["-fopenmp"])
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib"
        setup(
            name="rnnlab_scan_ext",
            ext_modules=[ext],
            cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
            script_args=["-q" if not verbose else "-v", "build_ext", "--build-lib", str(lib),
                         "--build-temp", str(Path(tmp) / "temp")],
        )
        built = sorted((lib / "rnnlab").glob("_scan_ext*.so"))
        if not built:
            raise SystemExit("rnnlab.build_kernels: the build produced no _scan_ext*.so")
        target = PACKAGE_DIR / built[-1].name
        staged = target.with_suffix(".so.new")
        shutil.copy2(built[-1], staged)
        os.replace(staged, target)  # atomic: a process importing rnnlab meanwhile sees the old or the new one
    return target


def main() -> int:
    os.chdir(PACKAGE_DIR)  # setuptools writes nothing outside build-lib/build-temp from here
    path = build(verbose="-v" in sys.argv)
    print(f"rnnlab: built {path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
