# Constants of the kernels. CHUNK, ROW_CHUNK, GATHER, LANES and FLUSH fix the summation order
# (the determinism contract, see _chunks.pxi): changing one changes the bits of results, never
# their dependence on threads or SIMD target. The others only move speed.
cdef enum:
    CHUNK = 4096          # values of one channel (or row) per statistics chunk: 16 KB of
                          # float32, so the redo around the mean re-reads it from L1/L2
    ROW_CHUNK = 65536     # rows layout (inner == 1): values (rows x C) per statistics chunk;
                          # the lanes there span channels, so chunks count all of them
    GATHER = 512          # inner sizes below this are short rows: chunks of whole outer rows
                          # in memory order (one channel's short rows lie on many pages)
    LANES = 32            # independent accumulators per sum: two AVX-512 registers of float,
                          # enough to hide the add latency; fixed, so every target sums alike
                          # (16 was measured: GCC unrolls a 16-wide block fully and then fails
                          # to vectorize it, 3x slower)
    PAD = 16              # doubles between threads' scratch buffers: no cache line is shared
    FLUSH = 8             # float32 lanes add FLUSH blocks before flushing into double, so a
                          # float lane's rounding stays near 1e-7 of what it holds
    PARALLEL_MIN = 32768  # below this many values an OpenMP region costs more than it saves
    LONG_ROW = 4096       # row norms: rows at least this long run the backward by column
                          # blocks (a chunk of such rows would not stay in cache)
    LONG_RUN = 32768      # planar runs at least this long take the in-cache passes (_fused in
                          # _apply.pxi); (2, 64, 224, 224) measured faster so, (8, 32, 128,
                          # 128) faster in the whole-array passes
    ROW_TILE = 512        # rows layout: values per call of the apply loop (see _apply_rows)
    STREAM_MIN = 524288   # a planar training backward of this many bytes and more writes dx
                          # by streaming stores (half an L2: it pushes x and dy out anyway):
                          # GroupNorm(32) (32, 64, 56, 56) fwd + bwd 6.0 -> 4.6 ms, AMD EPYC
    STREAM_RUN = 1024     # ... in runs this long (short runs leave partial lines, which
                          # streaming stores write slowly: a (64, 512, 7, 7) forward 1.4x
                          # slower)
    ROWS_L3 = 8388608     # row norms' long-row backward: bytes of x and dy per block of rows,
                          # summed, then read again for dx from L3 (LayerNorm over (C, H, W)
                          # (32, 64, 56, 56): a third pass over memory otherwise)
    COL_BLOCK = 16384     # row norms' long-row backward: columns per block of the dx pass
                          # (64 KB runs of x, dy and dx a row; the column sums of a block,
                          # 128 KB, stay in L2): LayerNorm over (C, H, W) (32, 64, 56, 56)
                          # backward 2T 4.1-5.6 -> 3.5-3.9 ms against CHUNK (4096) columns,
                          # 1T ~5% (AMD EPYC, min of 30, A/B); 32768 and 65536 slower at 2T
    ROW_BLOCK = 16        # row norms: rows normalized per step (their divisions and square
                          # roots overlap, and at most CHUNK values of them stay in cache)
    SHORT_ROW = 4096      # row norms: float rows of at most this many values (one chunk)
                          # are summed by one inlined loop: the chunk machinery per row
                          # cost more than a short row's values (LayerNorm (4096, 64)
                          # forward on AMD EPYC: 0.265 -> 0.170 ms)

cdef enum:  # the fused epilogue's activations (cnorm/nn/_ops/act.py names them)
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_LEAKY = 2
    ACT_SILU = 3
    ACT_GELU = 4
