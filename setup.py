"""Build script: compiles the Cython kernels in src/ into cnorm._core._kernels_<target> (the
norms) and cnorm._core._data_<target> (dataset statistics and input normalization).

src/common holds the steps both families share, src/nn the norm kernels, src/data the data
kernels, src/targets one small .pyx per family and SIMD target. Each family (src/nn/kernels.pxi,
src/data/data.pxi and the files they include) is built once per SIMD target:
``baseline`` (any x86-64, or any CPU elsewhere) and, on x86-64 with GCC/clang, ``avx2`` and
``avx512``. cnorm picks the best one the CPU supports at import, so a wheel built here runs on
any x86-64 CPU. cnorm.bench._stream (the benchmark report's copy probe) is built once, baseline.

OpenMP is probed by compiling and linking a tiny program (-fopenmp; /openmp with MSVC; Apple
clang's -Xpreprocessor -fopenmp with libomp); when that fails the kernels are built serially
(same results, one thread) and a warning is printed.
Builds carry no debug information (Python's own CFLAGS say -g; it made the extension modules
34 MB). Set CNORM_DEBUG=1 to keep it, CNORM_DISABLE_OPENMP=1 to force the serial build,
CNORM_TARGETS=baseline,avx2 to limit the targets, CNORM_SANITIZE=address for an
AddressSanitizer build (tools/run_asan.sh).
"""
import os
import platform
import shutil
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
TARGET_FLAGS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512dq",
               "-mavx512vl", "-mprefer-vector-width=512"],
}


def wanted_targets():
    names = os.environ.get("CNORM_TARGETS", "")
    if names:
        return [t for t in names.split(",") if t in TARGET_FLAGS] or ["baseline"]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return list(TARGET_FLAGS) if x86 and os.name != "nt" else ["baseline"]


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:  # one compiler per core: the targets build side by side
            self.parallel = os.cpu_count() or 1

    def _compiles(self, code, flags, link_flags=None):
        tmp = tempfile.mkdtemp()
        try:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(code)
            objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            self.compiler.link_executable(objs, "probe", output_dir=tmp,
                                          extra_postargs=flags if link_flags is None
                                          else link_flags)
            return True
        except Exception:  # any compiler or linker failure means the flags are unusable
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _openmp_flags(self):
        """(compile flags, link flags) of the compiler's OpenMP, or None. MSVC: /openmp
        (vcomp140.dll); GCC and LLVM clang: -fopenmp; Apple's clang: the preprocessor flag and
        libomp (its include and lib folders in CFLAGS and LDFLAGS: pyproject.toml's macOS
        wheel settings)."""
        if os.environ.get("CNORM_DISABLE_OPENMP", "") not in ("", "0"):
            return None
        if self.compiler.compiler_type == "msvc":
            choices = [(["/openmp"], [])]
        else:
            choices = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
        return next((c for c in choices if self._compiles(OPENMP_PROBE, *c)), None)

    def build_extensions(self):
        omp = self._openmp_flags()
        if omp is None:
            print("WARNING: cnorm is being built WITHOUT OpenMP; kernels will run on one thread.")
        omp_cflags, omp_ldflags = omp or ([], [])
        msvc = self.compiler.compiler_type == "msvc"
        # No -ffast-math: it breaks NaN/Inf propagation and reorders the deterministic sums.
        # -ffp-contract=off keeps a*b+c unfused so every build target rounds identically.
        # -fno-trapping-math changes no value (FP exception flags are never read here); it lets
        # the vectorizer turn the clamps of cnorm_exp.h into blends on AVX2 and SSE2.
        # -fno-math-errno changes no value either (errno is never read): sqrt becomes the
        # instruction alone, not one guarded by a branch to the library call.
        cflags = ["/O2"] if msvc else ["-O3", "-ffp-contract=off", "-fno-trapping-math",
                                       "-fno-math-errno"]
        sanitize = os.environ.get("CNORM_SANITIZE", "")
        san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"] if sanitize else []
        if not msvc and not sanitize and os.environ.get("CNORM_DEBUG", "") in ("", "0"):
            cflags.append("-g0")  # after Python's -g, so it wins; symbols stay for perf
        kept = []
        for ext in self.extensions:
            target = ext.name.rsplit("_", 1)[1]  # cnorm._core._data_avx2 -> avx2
            tflags = TARGET_FLAGS.get(target, [])  # cnorm.bench._stream: the baseline
            if tflags and not self._compiles("int main(void) { return 0; }\n", tflags):
                print(f"WARNING: the compiler cannot build the {target} target; skipped.")
                continue
            ext.extra_compile_args += cflags + tflags + san + omp_cflags
            ext.extra_link_args += omp_ldflags + san
            kept.append(ext)
        self.extensions = kept
        super().build_extensions()


INCLUDE = [os.path.join("src", d) for d in ("common", "nn", "data")]
KERNEL_SOURCES = [os.path.join(d, f) for d in INCLUDE for f in sorted(os.listdir(d))
                  if f.endswith(".pxi") or f.endswith(".h")]
# the small-call entries (src/nn/calls.pxi) read arrays through the NumPy C-API
NUMPY_API = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
extensions = [
    Extension(f"cnorm._core.{family}_{t}", [f"src/targets/{family}_{t}.pyx"],
              include_dirs=INCLUDE + [numpy.get_include()], depends=KERNEL_SOURCES,
              define_macros=NUMPY_API)
    for family in ("_kernels", "_data") for t in wanted_targets()
] + [Extension("cnorm.bench._stream", ["src/bench/_stream.pyx"])]  # the copy probe

setup(
    # Cython on one process per core where worker processes fork (Linux): each target's
    # module is 6 MB of C, 8-10 s of Cython
    ext_modules=cythonize(extensions, include_path=INCLUDE,
                          compiler_directives={"language_level": 3},
                          nthreads=(os.cpu_count() or 1) if sys.platform == "linux" else 0),
    cmdclass={"build_ext": BuildExt},
)
