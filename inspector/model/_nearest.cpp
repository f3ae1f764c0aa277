// Fused exact nearest-row search: for each query row, the gallery row at the smallest L2 distance.
//
// The minimum is formed inside the distance loop: a block of query rows is held (transposed, scaled by -2)
// in vector registers while gallery rows stream past; each candidate value |g|^2 - 2 q.g is compared with
// the running minimum of its query lane at once, so no distance block is ever written to memory. The
// winner's distance is then recomputed by direct difference, so the result is exact, not the candidate.
//
// Built at install time as a plain shared library (no Python C API; loaded with ctypes, which releases the
// GIL during the call). The instruction set is chosen at run time: AVX-512F, AVX2+FMA, or portable scalar
// code, each compiled with its own target attribute so the library runs on any x86-64 CPU (and builds on
// other architectures with the scalar path only).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define INSPECTOR_X86 1
#else
#define INSPECTOR_X86 0
#endif

namespace {

constexpr int ABI_VERSION = 1;
constexpr int ISA_SCALAR = 0;
constexpr int ISA_AVX2 = 1;
constexpr int ISA_AVX512 = 2;
constexpr int ERR_ARGUMENT = -1;
constexpr int ERR_ISA = -2;
constexpr int ERR_MEMORY = -3;  // no memory for the packed query blocks
constexpr int64_t MAX_ROWS = std::numeric_limits<int32_t>::max();  // lanes keep int32 row indices

// The gallery as segments of rows (e.g. the K nearest images of one query image, each its own segment).
struct Gallery {
    int64_t segments;
    const float* const* rows;   // rows[s]: first row of segment s; row r at rows[s] + r * row_stride
    const float* const* norms;  // norms[s]: squared norm of row r at norms[s] + r * norm_stride
    const int64_t* lengths;     // rows of segment s
    int64_t row_stride;
    int64_t norm_stride;
};

struct Query {
    const float* rows;  // row i at rows + i * stride
    int64_t count;
    int64_t channels;
    int64_t stride;
};

// The scalar kernel: one query row at a time, the same candidate formula and tie rule (first row wins).
void scalar_block(const Query& q, const Gallery& g, int64_t begin, int64_t end, int64_t* best_index) {
    for (int64_t i = begin; i < end; ++i) {
        const float* qi = q.rows + i * q.stride;
        float best = std::numeric_limits<float>::infinity();
        int64_t arg = 0, base = 0;
        for (int64_t s = 0; s < g.segments; ++s) {
            for (int64_t r = 0; r < g.lengths[s]; ++r) {
                const float* gr = g.rows[s] + r * g.row_stride;
                float dot = 0.0f;
                for (int64_t c = 0; c < q.channels; ++c) dot += qi[c] * gr[c];
                float cand = g.norms[s][r * g.norm_stride] - 2.0f * dot;
                if (cand < best) {
                    best = cand;
                    arg = base + r;
                }
            }
            base += g.lengths[s];
        }
        best_index[i] = arg;
    }
}

#if INSPECTOR_X86

// Vector kernels: LANES query rows per vector, R vectors per block (LANES * R queries held as [C][LANES * R],
// scaled by -2), G gallery rows per step. Accumulators G x R, running minimum and its row per vector.
#define INSPECTOR_VECTOR_KERNEL(NAME, TARGET, VEC, IVEC, LANES, R, G, SET1, LOAD, FMA, MIN, LESS, BLEND, \
                                SET1I, STOREI, ZERO)                                                   \
    __attribute__((target(TARGET))) void NAME(const Query& q, const Gallery& g, int64_t begin,          \
                                              int64_t end, float* packed, int64_t* best_index) {       \
        constexpr int64_t BLOCK = LANES * R;                                                           \
        const int64_t C = q.channels;                                                                  \
        for (int64_t q0 = begin; q0 < end; q0 += BLOCK) {                                              \
            const int64_t rows = std::min<int64_t>(BLOCK, end - q0);                                   \
            for (int64_t c = 0; c < C; ++c)                                                            \
                for (int64_t l = 0; l < BLOCK; ++l)                                                    \
                    packed[c * BLOCK + l] = l < rows ? -2.0f * q.rows[(q0 + l) * q.stride + c] : 0.0f;  \
            VEC best[R];                                                                               \
            IVEC arg[R];                                                                               \
            for (int r = 0; r < R; ++r) {                                                              \
                best[r] = SET1(std::numeric_limits<float>::infinity());                                \
                arg[r] = ZERO();                                                                       \
            }                                                                                          \
            int64_t base = 0;                                                                          \
            for (int64_t s = 0; s < g.segments; ++s) {                                                 \
                const float* grows = g.rows[s];                                                        \
                const float* gnorms = g.norms[s];                                                      \
                const int64_t n = g.lengths[s];                                                        \
                int64_t j = 0;                                                                         \
                for (; j + G <= n; j += G) {                                                           \
                    VEC acc[G][R];                                                                     \
                    const float* gr[G];                                                                \
                    for (int i = 0; i < G; ++i) {                                                      \
                        gr[i] = grows + (j + i) * g.row_stride;                                        \
                        VEC nv = SET1(gnorms[(j + i) * g.norm_stride]);                                \
                        for (int r = 0; r < R; ++r) acc[i][r] = nv;                                    \
                    }                                                                                  \
                    for (int64_t c = 0; c < C; ++c) {                                                  \
                        VEC qv[R];                                                                     \
                        for (int r = 0; r < R; ++r) qv[r] = LOAD(packed + c * BLOCK + r * LANES);      \
                        for (int i = 0; i < G; ++i) {                                                  \
                            VEC gv = SET1(gr[i][c]);                                                   \
                            for (int r = 0; r < R; ++r) acc[i][r] = FMA(qv[r], gv, acc[i][r]);         \
                        }                                                                              \
                    }                                                                                  \
                    for (int i = 0; i < G; ++i) {                                                      \
                        IVEC at = SET1I(static_cast<int>(base + j + i));                               \
                        for (int r = 0; r < R; ++r) {                                                  \
                            arg[r] = BLEND(arg[r], at, LESS(acc[i][r], best[r]));                      \
                            best[r] = MIN(acc[i][r], best[r]);                                         \
                        }                                                                              \
                    }                                                                                  \
                }                                                                                      \
                for (; j < n; ++j) { /* the gallery's tail, one row at a time */                       \
                    const float* grow = grows + j * g.row_stride;                                      \
                    VEC acc[R];                                                                        \
                    VEC nv = SET1(gnorms[j * g.norm_stride]);                                          \
                    for (int r = 0; r < R; ++r) acc[r] = nv;                                           \
                    for (int64_t c = 0; c < C; ++c) {                                                  \
                        VEC gv = SET1(grow[c]);                                                        \
                        for (int r = 0; r < R; ++r)                                                    \
                            acc[r] = FMA(LOAD(packed + c * BLOCK + r * LANES), gv, acc[r]);            \
                    }                                                                                  \
                    IVEC at = SET1I(static_cast<int>(base + j));                                       \
                    for (int r = 0; r < R; ++r) {                                                      \
                        arg[r] = BLEND(arg[r], at, LESS(acc[r], best[r]));                             \
                        best[r] = MIN(acc[r], best[r]);                                                \
                    }                                                                                  \
                }                                                                                      \
                base += n;                                                                             \
            }                                                                                          \
            alignas(64) int32_t lanes[BLOCK];                                                          \
            for (int r = 0; r < R; ++r) STOREI(lanes + r * LANES, arg[r]);                             \
            for (int64_t l = 0; l < rows; ++l) best_index[q0 + l] = lanes[l];                          \
        }                                                                                              \
    }

// AVX-512F: 16 lanes, 2 vectors (32 queries) x 4 gallery rows: 8 accumulators, 4 for the minimum (4 x 4
// spilled registers and ran at 0.6x on a Zen 4; 1 x 8, 2 x 4, 2 x 6 and 3 x 4 all reached its FMA peak).
#define I512_LESS(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_LT_OQ)
#define I512_BLEND(old, at, mask) _mm512_mask_mov_epi32((old), (mask), (at))
#define I512_STORE(p, v) _mm512_store_si512(reinterpret_cast<void*>(p), (v))
INSPECTOR_VECTOR_KERNEL(avx512_block, "avx512f", __m512, __m512i, 16, 2, 4, _mm512_set1_ps, _mm512_load_ps,
                        _mm512_fmadd_ps, _mm512_min_ps, I512_LESS, I512_BLEND, _mm512_set1_epi32, I512_STORE,
                        _mm512_setzero_si512)

// AVX2 + FMA: 8 lanes, 2 vectors (16 queries) x 4 gallery rows: 8 accumulators, 4 for the minimum.
#define I256_LESS(a, b) _mm256_castps_si256(_mm256_cmp_ps((a), (b), _CMP_LT_OQ))
#define I256_BLEND(old, at, mask)                                                                  \
    _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(old), _mm256_castsi256_ps(at), \
                                         _mm256_castsi256_ps(mask)))
#define I256_STORE(p, v) _mm256_store_si256(reinterpret_cast<__m256i*>(p), (v))
INSPECTOR_VECTOR_KERNEL(avx2_block, "avx2,fma", __m256, __m256i, 8, 2, 4, _mm256_set1_ps, _mm256_load_ps,
                        _mm256_fmadd_ps, _mm256_min_ps, I256_LESS, I256_BLEND, _mm256_set1_epi32, I256_STORE,
                        _mm256_setzero_si256)

constexpr int64_t AVX512_BLOCK = 32;
constexpr int64_t AVX2_BLOCK = 16;

#endif

int best_isa() {
#if INSPECTOR_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_SCALAR;
}

int64_t block_rows(int isa) {
#if INSPECTOR_X86
    if (isa == ISA_AVX512) return AVX512_BLOCK;
    if (isa == ISA_AVX2) return AVX2_BLOCK;
#endif
    (void)isa;
    return 1;
}

// One thread's share: query rows [begin, end), begin a multiple of the block; packed holds block x C floats.
void search_range(int isa, const Query& q, const Gallery& g, int64_t begin, int64_t end, float* packed,
                  int64_t* best_index) {
#if INSPECTOR_X86
    if (isa == ISA_AVX512) return avx512_block(q, g, begin, end, packed, best_index);
    if (isa == ISA_AVX2) return avx2_block(q, g, begin, end, packed, best_index);
#endif
    (void)packed;
    scalar_block(q, g, begin, end, best_index);
}

// The winner's distance by direct difference (double accumulation), and its row as a global index.
void exact_distances(const Query& q, const Gallery& g, const std::vector<int64_t>& starts, int64_t begin,
                     int64_t end, const int64_t* best_index, float* out_dist) {
    for (int64_t i = begin; i < end; ++i) {
        const int64_t at = best_index[i];
        const int64_t s = std::upper_bound(starts.begin(), starts.end(), at) - starts.begin() - 1;
        const float* gr = g.rows[s] + (at - starts[s]) * g.row_stride;
        const float* qi = q.rows + i * q.stride;
        double sum = 0.0;
        for (int64_t c = 0; c < q.channels; ++c) {
            const double d = static_cast<double>(qi[c]) - static_cast<double>(gr[c]);
            sum += d * d;
        }
        out_dist[i] = static_cast<float>(std::sqrt(sum));
    }
}

}  // namespace

#define INSPECTOR_EXPORT __attribute__((visibility("default")))

extern "C" {

// Version of this C interface; the Python loader refuses a library whose version it does not know.
INSPECTOR_EXPORT int inspector_nearest_abi() { return ABI_VERSION; }

// The widest instruction set this CPU and OS run: 0 scalar, 1 AVX2+FMA, 2 AVX-512F.
INSPECTOR_EXPORT int inspector_nearest_best_isa() { return best_isa(); }

// For each of the m query rows, the nearest gallery row (exact L2 distance and global row index, rows
// numbered through the segments in order; on ties the first row wins). isa: -1 for the best, else one of
// 0/1/2 (refused when the CPU lacks it). threads: query rows are split between this many threads.
// Returns 0, or a negative error code (bad argument, instruction set not available, out of memory).
INSPECTOR_EXPORT int inspector_nearest(const float* queries, int64_t m, int64_t channels, int64_t query_stride,
                      int64_t segments, const float* const* segment_rows, const float* const* segment_norms,
                      const int64_t* segment_lengths, int64_t row_stride, int64_t norm_stride, int isa,
                      int threads, float* out_distance, int64_t* out_index) {
    if (m < 0 || channels < 1 || segments < 1 || query_stride < channels || row_stride < channels ||
        norm_stride < 1 || threads < 1 || queries == nullptr || out_distance == nullptr || out_index == nullptr)
        return ERR_ARGUMENT;
    std::vector<int64_t> starts(static_cast<size_t>(segments));
    int64_t total = 0;
    for (int64_t s = 0; s < segments; ++s) {
        if (segment_lengths[s] < 1 || segment_rows[s] == nullptr || segment_norms[s] == nullptr)
            return ERR_ARGUMENT;
        starts[static_cast<size_t>(s)] = total;
        total += segment_lengths[s];
    }
    if (total > MAX_ROWS) return ERR_ARGUMENT;
    const int best = best_isa();
    if (isa < 0) isa = best;
    if (isa > best) return ERR_ISA;
    if (m == 0) return 0;
    const Query q{queries, m, channels, query_stride};
    const Gallery g{segments, segment_rows, segment_norms, segment_lengths, row_stride, norm_stride};
    const int64_t block = block_rows(isa);
    const int64_t blocks = (m + block - 1) / block;
    const int64_t workers = std::min<int64_t>(threads, blocks);
    const size_t packed_floats = static_cast<size_t>(block * channels) + 16;  // + 16: room to align to 64 bytes
    std::vector<std::vector<float>> packed;
    try {
        packed.assign(static_cast<size_t>(workers), std::vector<float>(packed_floats));
    } catch (...) {
        return ERR_MEMORY;
    }
    auto work = [&](int64_t w) {
        const int64_t begin = std::min(m, blocks * w / workers * block);
        const int64_t end = std::min(m, blocks * (w + 1) / workers * block);
        void* raw = packed[static_cast<size_t>(w)].data();
        size_t room = packed_floats * sizeof(float);
        float* aligned = static_cast<float*>(std::align(64, sizeof(float) * block * channels, raw, room));
        search_range(isa, q, g, begin, end, aligned, out_index);
        exact_distances(q, g, starts, begin, end, out_index, out_distance);
    };
    std::vector<std::thread> pool;
    int64_t started = 1;
    try {
        pool.reserve(static_cast<size_t>(workers - 1));
        for (; started < workers; ++started) pool.emplace_back(work, started);
    } catch (...) {  // no more threads: this thread does the shares that found none
    }
    work(0);
    for (int64_t w = started; w < workers; ++w) work(w);
    for (auto& t : pool) t.join();
    return 0;
}

}  // extern "C"
