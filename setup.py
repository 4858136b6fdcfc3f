"""Build script: compiles the Cython kernels in src/ into cnorm._kernels.

OpenMP is probed by compiling and linking a tiny program with -fopenmp; when that fails
the kernels are built serially (same results, one thread) and a warning is printed.
Set CNORM_DISABLE_OPENMP=1 to force the serial build.
"""
import os
import shutil
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


class BuildExt(build_ext):
    def _openmp_flag(self):
        if os.environ.get("CNORM_DISABLE_OPENMP", "") not in ("", "0"):
            return None
        flag = "/openmp" if self.compiler.compiler_type == "msvc" else "-fopenmp"
        tmp = tempfile.mkdtemp()
        try:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(OPENMP_PROBE)
            objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            self.compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=[flag])
            return flag
        except Exception:  # any compiler or linker failure means no usable OpenMP
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def build_extensions(self):
        flag = self._openmp_flag()
        if flag is None:
            print("WARNING: cnorm is being built WITHOUT OpenMP; kernels will run on one thread.")
        msvc = self.compiler.compiler_type == "msvc"
        # No -ffast-math: it breaks NaN/Inf propagation and reorders the deterministic sums.
        # -ffp-contract=off keeps a*b+c unfused so every build target rounds identically.
        cflags = ["/O2"] if msvc else ["-O3", "-ffp-contract=off"]
        for ext in self.extensions:
            ext.extra_compile_args += cflags + ([flag] if flag else [])
            ext.extra_link_args += [flag] if flag and not msvc else []
        super().build_extensions()


extensions = [
    Extension("cnorm._kernels", ["src/_kernels.pyx"], include_dirs=["src"]),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
)
