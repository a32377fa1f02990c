"""What the processor can run, for choosing between builds of the kernels.

The elementwise passes (``_passes.pxd``) are compiled twice: for the baseline
x86-64 instruction set, which every machine the wheel installs on has, and
for AVX2 (``_layer_avx2``, ``_step_avx2``), which roughly halves their time.
``dnnblocks.backend`` asks this module which one to load.
"""

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int dnnblocks_cpu_has_avx2_fma(void) {
        /* libgcc's probe also checks that the OS saves the AVX registers. */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static int dnnblocks_cpu_has_avx2_fma(void) { return 0; }
    #endif
    """
    int dnnblocks_cpu_has_avx2_fma() noexcept nogil


def has_avx2_fma():
    """Whether this processor (and operating system) can run AVX2 and FMA code.

    Returns
    -------
    bool
    """
    return bool(dnnblocks_cpu_has_avx2_fma())
