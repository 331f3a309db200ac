// CPU kernels of the pixelsplat_ns rasteriser (tile binning, forward and backward
// compositing, projection) with gsplat 1.4.0's per-pixel rules. Plain C ABI, called
// through ctypes on tensors' data pointers: no Torch headers, so the build stays short.
// Every exported kernel takes a pointer to one argument struct (below), whose layout
// native.py checks against its ctypes mirror through psn_layout before using the library.
//
// Layout. Gaussians: packed[M][6 + D] = (mean x, mean y, conic a, b, c, opacity, colour[D]),
// rect[M][4] = pixel rectangle [x0, x1) x [y0, y1) outside which alpha < 1/255 or gsplat
// does not bin the Gaussian, sigma_cut[M] = sigma above which alpha < 1/255 for sure.
// Tiles: block x block pixels, tile t = (camera * tiles_y + ty) * tiles_x + tx, pixel
// p = v * block + u; per-pixel buffers are tile-major [n_tiles][block * block](...).
// Tile t's Gaussians (indices into M, front to back) are ids[start[t] .. start[t] + count[t]).
//
// Must be compiled without floating-point contraction (-ffp-contract=off) so that forward
// and backward evaluate alpha identically.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

// ---------------------------------------------------------------------------------------
// Argument structs. Each field list is written once, as an X-macro that both declares the
// struct and describes its layout to psn_layout ("name kind offset size;" per field, kind
// p = pointer, i = integer, f = floating point). native.py declares the same fields, in the
// same order, as ctypes Structures and refuses the library unless the descriptions agree.
// Pointers are contiguous CPU tensors' data ([shape] in the comments; S = float or double),
// counts and sizes int64_t, flags int32_t, settings double.
// ---------------------------------------------------------------------------------------

template <typename T>
void describe_field(std::string &out, const char *name, size_t offset) {
    static_assert(std::is_pointer<T>::value || std::is_arithmetic<T>::value, "plain fields only");
    const char kind = std::is_pointer<T>::value ? 'p' : std::is_floating_point<T>::value ? 'f' : 'i';
    out += std::string(name) + ' ' + kind + ' ' + std::to_string(offset) + ' ' + std::to_string(sizeof(T)) + ';';
}

#define PSN_DECLARE_FIELD(type, name) type name;
#define PSN_DESCRIBE_FIELD(type, name) describe_field<type>(out, #name, offsetof(Self, name));
#define PSN_ARGS_STRUCT_BODY(FIELDS) \
    FIELDS(PSN_DECLARE_FIELD)        \
    static void describe(std::string &out) { FIELDS(PSN_DESCRIBE_FIELD) }

// psn_depth_order_{f32,f64}: entries with sigma_cut > 0, sorted front to back.
#define PSN_DEPTH_ORDER_FIELDS(F)                                              \
    F(const S *, depths)    /* [n_entries] depth of each (camera, Gaussian) */ \
    F(const S *, sigma_cut) /* [n_entries] */                                  \
    F(int64_t, n_entries)                                                      \
    F(int64_t *, out) /* [n_entries] the sorted flat ids; the count is returned */
template <typename S>
struct DepthOrderArgs {
    typedef DepthOrderArgs Self;
    PSN_ARGS_STRUCT_BODY(PSN_DEPTH_ORDER_FIELDS)
};

// psn_bin_count / psn_bin_fill: per-tile Gaussian lists (counting sort).
#define PSN_BIN_FIELDS(F)                                                                           \
    F(const int64_t *, order) /* [n_order] flat ids camera * n_per_cam + Gaussian, front to back */ \
    F(int64_t, n_order)                                                                             \
    F(const int32_t *, rects) /* [n_cameras * n_per_cam][4] pixel rectangles x0, x1, y0, y1 */      \
    F(int64_t, n_per_cam)                                                                           \
    F(int64_t, block) /* tile side in pixels */                                                     \
    F(int64_t, tiles_x)                                                                             \
    F(int64_t, tiles_y)                                                                             \
    F(int64_t *, count)    /* psn_bin_count: [n_tiles] list lengths, incremented */                 \
    F(int64_t *, cursor)   /* psn_bin_fill: [n_tiles] the lists' start offsets, advanced */         \
    F(int64_t *, gauss_ids) /* psn_bin_fill: [n_isects] the lists */
struct BinArgs {
    typedef BinArgs Self;
    PSN_ARGS_STRUCT_BODY(PSN_BIN_FIELDS)
};

// psn_composite_{fwd,bwd}_{f32,f64}: compositing of M = n_gaussians projected Gaussians
// (all cameras', flattened) with D = n_channels colour channels into C cameras' images.
#define PSN_COMPOSITE_FIELDS(F)                                                                    \
    F(const S *, means2d)     /* [M][2] */                                                         \
    F(const S *, conics)      /* [M][3] */                                                         \
    F(const S *, opacities)   /* [M] */                                                            \
    F(const S *, colors)      /* [M][D] */                                                         \
    F(const S *, backgrounds) /* [C][D] or null */                                                 \
    F(int64_t, n_gaussians)                                                                        \
    F(int64_t, n_channels) /* 3 (RGB) or 4 (RGB + depth) */                                        \
    F(int32_t, expected_depth) /* last channel is depth: render divides it by max(alpha, 1e-10) */ \
    F(const int64_t *, gauss_ids) /* tile t's list: gauss_ids[start[t] .. start[t] + count[t]) */  \
    F(const int64_t *, start)     /* [n_tiles] */                                                  \
    F(const int64_t *, count)     /* [n_tiles] */                                                  \
    F(const int32_t *, rects)     /* [M][4] */                                                     \
    F(const S *, sigma_cut)       /* [M] */                                                        \
    F(int64_t, block)                                                                              \
    F(int64_t, tiles_x)                                                                            \
    F(int64_t, tiles_y)                                                                            \
    F(int64_t, width)                                                                              \
    F(int64_t, height)                                                                             \
    F(int64_t, n_tiles)                                                                            \
    /* written by the forward; render_raw, transmittance and used are read by the backward */      \
    F(S *, render_raw)    /* [C][H][W][D] sum alpha T c + T bg */                                  \
    F(S *, render)        /* [C][H][W][D] render_raw with the ED channel divided */                \
    F(S *, alpha)         /* [C][H][W] 1 - T */                                                    \
    F(S *, transmittance) /* [C][H][W] final T */                                                  \
    F(int32_t *, used)    /* [C][H][W] list entries each pixel consumed */                         \
    /* backward: gradients of render and alpha in, of the inputs out */                            \
    F(const S *, v_render) /* [C][H][W][D] */                                                      \
    F(const S *, v_alpha)  /* [C][H][W] */                                                         \
    F(S *, v_means2d)                                                                              \
    F(S *, v_conics)                                                                               \
    F(S *, v_opacities)                                                                            \
    F(S *, v_colors)                                                                               \
    F(S *, v_backgrounds) /* null without backgrounds */                                           \
    F(int32_t, n_threads)
template <typename S>
struct CompositeArgs {
    typedef CompositeArgs Self;
    PSN_ARGS_STRUCT_BODY(PSN_COMPOSITE_FIELDS)
};

// psn_project_{fwd,bwd}_{f32,f64}: projection of N = n_gaussians Gaussians into C =
// n_cameras cameras, SH colours, footprints; outputs are [C][N](...).
#define PSN_PROJECT_FIELDS(F)                                                                      \
    F(const S *, means)     /* [N][3] */                                                           \
    F(const S *, quats)     /* [N][4] wxyz, any norm */                                            \
    F(const S *, scales)    /* [N][3] */                                                           \
    F(const S *, opacities) /* [N] */                                                              \
    F(const S *, sh) /* [N][K][3] or per camera [C][N][K][3], K = n_sh_coeffs; null: no colours */ \
    F(const S *, viewmats)  /* [C][4][4] world to camera */                                        \
    F(const S *, Ks)        /* [C][3][3] intrinsics */                                             \
    F(const S *, campos)    /* [C][3] camera centres */                                            \
    F(int64_t, sh_cam_stride) /* N K 3 for per-camera coefficients, else 0 */                      \
    F(int64_t, n_sh_coeffs)                                                                        \
    F(int32_t, sh_degree)      /* -1 without SH */                                                 \
    F(int32_t, expected_depth) /* colours get a 4th channel: the depth (for gsplat's "RGB+ED") */  \
    F(int64_t, n_cameras)                                                                          \
    F(int64_t, n_gaussians)                                                                        \
    F(int64_t, width)                                                                              \
    F(int64_t, height)                                                                             \
    F(double, eps2d)                                                                               \
    F(double, near_plane)                                                                          \
    F(double, far_plane)                                                                           \
    F(double, radius_clip)                                                                         \
    /* written by the forward; radii is read by the backward */                                    \
    F(int32_t *, radii)      /* [C][N] 0 = culled */                                               \
    F(S *, means2d)          /* [C][N][2] */                                                       \
    F(S *, depths)           /* [C][N] */                                                          \
    F(S *, conics)           /* [C][N][3] */                                                       \
    F(S *, colors)           /* [C][N][3 or 4], null without SH */                                 \
    F(int32_t *, rects)      /* [C * N][4] */                                                      \
    F(S *, sigma_cut)        /* [C * N] */                                                         \
    F(int32_t *, tiles_per_gauss) /* [C][N] gsplat's 16x16 tiles */                                \
    /* backward: gradients of the outputs in (null = zero), of the inputs out */                   \
    F(const S *, v_means2d)                                                                        \
    F(const S *, v_depths)                                                                         \
    F(const S *, v_conics)                                                                         \
    F(const S *, v_colors)                                                                         \
    F(S *, v_means)                                                                                \
    F(S *, v_quats)                                                                                \
    F(S *, v_scales)                                                                               \
    F(S *, v_sh) /* null without SH */                                                             \
    F(int32_t, n_threads)
template <typename S>
struct ProjectArgs {
    typedef ProjectArgs Self;
    PSN_ARGS_STRUCT_BODY(PSN_PROJECT_FIELDS)
};

namespace {

// Run f(thread, i) for i in [0, n) on n_threads threads (dynamic scheduling). OpenMP, so
// that the work lands on Torch's own (libgomp) thread pool, whose workers are usually
// still spinning after Torch's last parallel op; without OpenMP it runs serially.
template <typename F>
void parallel_for(int64_t n, int n_threads, F f) {
    n_threads = (int)std::max<int64_t>(1, std::min<int64_t>(n_threads, n));
#ifdef _OPENMP
    if (n_threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
        for (int64_t i = 0; i < n; ++i) f(omp_get_thread_num(), i);
        return;
    }
#endif
    for (int64_t i = 0; i < n; ++i) f(0, i);
}

// One tile row as a GCC/Clang vector (B lanes); the compiler maps it onto SSE/AVX/AVX-512.
template <typename S, int B>
struct Row {
    typedef S V __attribute__((vector_size(sizeof(S) * B)));
    typedef decltype(V{} < V{}) M;  // lane mask (all bits set = true)
    static V load(const S *p) {
        V v;
        std::memcpy(&v, p, sizeof(V));
        return v;
    }
    static void store(S *p, V v) { std::memcpy(p, &v, sizeof(V)); }
    static V splat(S x) { return V{} + x; }
    static S sum(V v) {
        S t = 0;
        for (int i = 0; i < B; ++i) t += v[i];
        return t;
    }
    static int count(M m) {
        int n = 0;
        for (int i = 0; i < B; ++i) n += m[i] != 0;
        return n;
    }
};

// exp(x), x <= 0, lane-wise. float: branch-free Cephes-style polynomial (~1 ulp);
// double: std::exp. Forward and backward share it, so their alphas agree bit for bit.
template <typename S, int B>
inline typename Row<S, B>::V exp_lanes(typename Row<S, B>::V x) {
    typename Row<S, B>::V out;
    for (int i = 0; i < B; ++i) out[i] = std::exp(x[i]);
    return out;
}

template <int B>
inline typename Row<float, B>::V exp_float_lanes(typename Row<float, B>::V x) {
    typedef typename Row<float, B>::V V;
    typedef typename Row<float, B>::M Mi;
    const V lo = Row<float, B>::splat(-87.0f);
    x = x < lo ? lo : x;
    const float magic = 12582912.0f;  // 1.5 * 2^23: rounds to the nearest integer
    const V t = x * 1.44269504088896341f + magic;
    const V fn = t - magic;
    const Mi n = (Mi)t - (Mi)Row<float, B>::splat(magic);
    const V r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
    V p = Row<float, B>::splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * (V)((n + 127) << 23);
}
template <> inline Row<float, 8>::V exp_lanes<float, 8>(Row<float, 8>::V x) { return exp_float_lanes<8>(x); }
template <> inline Row<float, 16>::V exp_lanes<float, 16>(Row<float, 16>::V x) { return exp_float_lanes<16>(x); }

// gsplat's alpha on one row; vis = 0 beyond the cut (there alpha < 1/255), which also
// keeps subnormals out of masked lanes.
template <typename S, int B>
struct RowAlpha {
    typedef typename Row<S, B>::V V;
    typedef typename Row<S, B>::M M;
    V vis, a0, alpha;
    M ok;  // sigma >= 0 and alpha >= 1/255
    // adx2 = (a dx) dx and bdx = b dx are per-Gaussian (row-independent) lanes: same
    // rounding as gsplat's 0.5 (a dx dx + c dy dy) + b dx dy.
    RowAlpha(V adx2, V bdx, S dy, S cdy, S op, S cut) {
        const V sigma = S(0.5) * (adx2 + cdy) + bdx * dy;
        const M inside = sigma <= cut;
        const V zero = V{};
        vis = inside ? exp_lanes<S, B>(-sigma) : zero;
        a0 = op * vis;
        const V amax = Row<S, B>::splat(S(0.999));
        alpha = a0 < amax ? a0 : amax;
        ok = (sigma >= S(0)) & inside & (alpha >= S(1.0f / 255.0f));
    }
};

// Rows [y0, y1) of tile (ox, oy) a Gaussian's rectangle covers. Every pixel of those
// rows is evaluated: the tile lies inside gsplat's tile rectangle and outside the
// Gaussian's rectangle alpha < 1/255, so this is exact.
inline bool tile_rows(const int32_t *rect, int64_t ox, int64_t oy, int64_t block, int64_t &y0, int64_t &y1) {
    if (std::max<int64_t>(rect[0], ox) >= std::min<int64_t>(rect[1], ox + block)) return false;  // no x overlap
    y0 = std::max<int64_t>(rect[2], oy);
    y1 = std::min<int64_t>(rect[3], oy + block);
    return y0 < y1;
}

// Tile lists visit Gaussians in depth order, i.e. at random addresses: fetch ahead.
constexpr int64_t PREFETCH = 8;
template <typename S>
inline void prefetch_gaussian(const S *packed, int64_t stride, const int32_t *rects, const S *sigma_cut, int64_t gid) {
    __builtin_prefetch(packed + gid * stride);
    __builtin_prefetch(rects + 4 * gid);
    __builtin_prefetch(sigma_cut + gid);
}

template <typename S, int B>
typename Row<S, B>::V lane_centres(int64_t ox) {
    typename Row<S, B>::V v;
    for (int i = 0; i < B; ++i) v[i] = S(ox + i) + S(0.5);
    return v;
}

// Forward over one tile; leaves T, used (list position of the terminating Gaussian, or
// the list length) and the planar colour sums acc[DC][P] in scratch.
template <typename S, int B, int DC>
void forward_tile(const S *packed, const int64_t *list, int64_t n, const int32_t *rects, const S *sigma_cut,
                  int64_t ox, int64_t oy, int64_t width, int64_t height, S *scratch) {
    static_assert(DC >= 3 && DC <= 4, "3 or 4 channels");
    typedef Row<S, B> R;
    typedef typename R::V V;
    typedef typename R::M M;
    constexpr int P = B * B;
    constexpr int64_t stride = 6 + DC;
    S *T = scratch, *done = scratch + P, *used = scratch + 2 * P, *acc = scratch + 3 * P;  // acc: [DC][P]
    for (int p = 0; p < P; ++p) {
        const bool inside = ox + p % B < width && oy + p / B < height;
        T[p] = S(1);
        done[p] = inside ? S(0) : S(1);  // pixels outside the image count as done
        used[p] = inside ? S(n) : S(0);
    }
    std::fill(acc, acc + DC * P, S(0));
    const V px = lane_centres<S, B>(ox);
    const S tmin = S(1e-4);  // float(1e-4) < 1e-4: same as gsplat's float-vs-double compare
    for (int64_t j = 0; j < n; ++j) {
        if ((j & 15) == 0 && j > 0) {  // stop once every pixel of the tile is done
            V live{};
            for (int off = 0; off < P; off += B) live += R::load(done + off);
            if (R::sum(live) >= S(P)) break;
        }
        const int64_t gid = list[j];
        if (j + PREFETCH < n) prefetch_gaussian(packed, stride, rects, sigma_cut, list[j + PREFETCH]);
        int64_t y0, y1;
        if (!tile_rows(rects + 4 * gid, ox, oy, B, y0, y1)) continue;
        const S *gp = packed + gid * stride;
        const S mx = gp[0], my = gp[1], ca = gp[2], cb = gp[3], cc = gp[4], op = gp[5], cut = sigma_cut[gid];
        const V dx = mx - px;
        const V adx2 = ca * dx * dx, bdx = cb * dx;
        const V jv = R::splat(S(j));
        for (int64_t y = y0; y < y1; ++y) {
            const S dy = my - (S(y) + S(0.5));
            const RowAlpha<S, B> ra(adx2, bdx, dy, cc * dy * dy, op, cut);
            const int off = (int)(y - oy) * B;
            const V Tp = R::load(T + off), dn = R::load(done + off);
            const M ok = ra.ok & (dn == S(0));
            const V next_T = Tp * (S(1) - ra.alpha);
            const M term = ok & (next_T <= tmin);
            const M comp = ok & ~term;
            const V w = comp ? ra.alpha * Tp : V{};
            for (int k = 0; k < DC; ++k) R::store(acc + k * P + off, R::load(acc + k * P + off) + w * gp[6 + k]);
            R::store(T + off, comp ? next_T : Tp);
            R::store(done + off, term ? R::splat(S(1)) : dn);
            R::store(used + off, term ? jv : R::load(used + off));
        }
    }
}

// Backward over one tile: replays the forward front to back (same alpha code; entries at
// or beyond a pixel's consumed count are ignored) and accumulates per-Gaussian gradients.
// Backward over one tile. scratch holds, per pixel, T = 1, G = 0, gt = G_total, used (as
// S) and the planar colour gradients vc[DC][P]; n = the largest used.
template <typename S, int B, int DC>
void backward_tile(const S *packed, const int64_t *list, int64_t n, const int32_t *rects, const S *sigma_cut,
                   int64_t ox, int64_t oy, S *buf, S *scratch) {
    static_assert(DC >= 3 && DC <= 4, "3 or 4 channels");
    typedef Row<S, B> R;
    typedef typename R::V V;
    typedef typename R::M M;
    constexpr int P = B * B;
    constexpr int64_t stride = 6 + DC;
    S *T = scratch, *G = scratch + P, *gt = scratch + 2 * P, *used = scratch + 3 * P, *vc = scratch + 4 * P;
    const V px = lane_centres<S, B>(ox);
    for (int64_t j = 0; j < n; ++j) {
        const int64_t gid = list[j];
        if (j + PREFETCH < n) {
            const int64_t ahead = list[j + PREFETCH];
            prefetch_gaussian(packed, stride, rects, sigma_cut, ahead);
            __builtin_prefetch(buf + ahead * stride, 1);
        }
        int64_t y0, y1;
        if (!tile_rows(rects + 4 * gid, ox, oy, B, y0, y1)) continue;
        const S *gp = packed + gid * stride;
        const S mx = gp[0], my = gp[1], ca = gp[2], cb = gp[3], cc = gp[4], op = gp[5], cut = sigma_cut[gid];
        const V dx = mx - px;
        const V adx2 = ca * dx * dx, bdx = cb * dx, adx = ca * dx, hdx2 = S(0.5) * dx * dx;
        const S jS = S(j);
        V s_mx{}, s_my{}, s_a{}, s_b{}, s_c{}, s_o{}, s_col[DC] = {};
        M any{};
        for (int64_t y = y0; y < y1; ++y) {
            const S dy = my - (S(y) + S(0.5));
            const RowAlpha<S, B> ra(adx2, bdx, dy, cc * dy * dy, op, cut);
            const int off = (int)(y - oy) * B;
            const M ok = ra.ok & (jS < R::load(used + off));
            V vck[DC];
            V gc{};
            for (int k = 0; k < DC; ++k) {
                vck[k] = R::load(vc + k * P + off);
                gc += vck[k] * gp[6 + k];
            }
            const V Tp = R::load(T + off), Gp = R::load(G + off);
            const V w = ra.alpha * Tp;
            const V upto = Gp + w * gc;
            const V v_alpha = Tp * gc - (R::load(gt + off) - upto) / (S(1) - ra.alpha);
            R::store(G + off, ok ? upto : Gp);
            R::store(T + off, ok ? Tp * (S(1) - ra.alpha) : Tp);
            const V wm = ok ? w : V{};
            for (int k = 0; k < DC; ++k) s_col[k] += wm * vck[k];
            const M free = ok & (ra.a0 <= S(0.999));
            const V v_sigma = free ? -ra.a0 * v_alpha : V{};
            // d sigma / d(a, b, c) = (dx^2 / 2, dx dy, dy^2 / 2); d sigma / d mean = conic d
            s_a += v_sigma * hdx2;
            s_b += v_sigma * dx * dy;
            s_c += v_sigma * (S(0.5) * dy * dy);
            s_mx += v_sigma * (adx + cb * dy);
            s_my += v_sigma * (bdx + cc * dy);
            s_o += free ? ra.vis * v_alpha : V{};
            any |= ok;
        }
        if (R::count(any)) {
            S *o = buf + gid * stride;
            o[0] += R::sum(s_mx);
            o[1] += R::sum(s_my);
            o[2] += R::sum(s_a);
            o[3] += R::sum(s_b);
            o[4] += R::sum(s_c);
            o[5] += R::sum(s_o);
            for (int k = 0; k < DC; ++k) o[6 + k] += R::sum(s_col[k]);
        }
    }
}

// Gaussian records (mean, conic, opacity, colour) packed for locality.
template <typename S>
std::vector<S> pack_gaussians(const CompositeArgs<S> &a, int n_threads) {
    const int64_t stride = 6 + a.n_channels;
    std::vector<S> packed(a.n_gaussians * stride);
    const int64_t block = 8192;
    parallel_for((a.n_gaussians + block - 1) / block, n_threads, [&](int, int64_t b) {
        for (int64_t i = b * block; i < std::min(a.n_gaussians, (b + 1) * block); ++i) {
            S *o = packed.data() + i * stride;
            o[0] = a.means2d[2 * i], o[1] = a.means2d[2 * i + 1];
            o[2] = a.conics[3 * i], o[3] = a.conics[3 * i + 1], o[4] = a.conics[3 * i + 2];
            o[5] = a.opacities[i];
            for (int64_t k = 0; k < a.n_channels; ++k) o[6 + k] = a.colors[i * a.n_channels + k];
        }
    });
    return packed;
}

// Image-layout outputs: render_raw = sum alpha T c + T bg, render_out = the same with the
// ED channel divided by max(1 - T, 1e-10), alpha = 1 - T, and T / used for the backward.
template <typename S, int B, int DC>
void forward_all(const CompositeArgs<S> &a) {
    constexpr int P = B * B;
    S *render_raw = a.render_raw, *render_out = a.render, *alpha_out = a.alpha, *T_img = a.transmittance;
    int32_t *used_img = a.used;
    const int n_threads = a.n_threads;
    const int64_t per_cam = a.tiles_x * a.tiles_y, W = a.width, H = a.height;
    const std::vector<S> packed = pack_gaussians(a, n_threads);
    const int nt = std::max(1, n_threads);
    std::vector<std::vector<S>> scratch(nt, std::vector<S>((3 + DC) * P));
    parallel_for(a.n_tiles, n_threads, [&](int thread, int64_t t) {
        const int64_t cam = t / per_cam, in_cam = t % per_cam;
        const int64_t ox = (in_cam % a.tiles_x) * B, oy = (in_cam / a.tiles_x) * B;
        S *sc = scratch[thread].data();
        forward_tile<S, B, DC>(packed.data(), a.gauss_ids + a.start[t], a.count[t], a.rects, a.sigma_cut, ox, oy, W, H,
                               sc);
        const S *T = sc, *used = sc + 2 * P, *acc = sc + 3 * P;
        const S *bg = a.backgrounds ? a.backgrounds + cam * DC : nullptr;
        for (int v = 0; v < B && oy + v < H; ++v) {
            for (int u = 0; u < B && ox + u < W; ++u) {
                const int p = v * B + u;
                const int64_t pix = (cam * H + oy + v) * W + ox + u;
                const S Tp = T[p], alpha = S(1) - Tp;
                T_img[pix] = Tp;
                alpha_out[pix] = alpha;
                used_img[pix] = (int32_t)used[p];
                for (int k = 0; k < DC; ++k) {
                    const S raw = bg ? acc[k * P + p] + Tp * bg[k] : acc[k * P + p];
                    render_raw[pix * DC + k] = raw;
                    const bool divide = a.expected_depth && k == DC - 1;
                    render_out[pix * DC + k] = divide ? raw / std::max(alpha, S(1e-10)) : raw;
                }
            }
        }
    });
}

// Gradients: v_means2d [M][2], v_conics [M][3], v_opac [M], v_colors [M][D], v_bg [C][D]
// (optional), from dL/d render_out [C][H][W][D] and dL/d alpha [C][H][W].
template <typename S, int B, int DC>
void backward_all(const CompositeArgs<S> &a) {
    constexpr int P = B * B;
    constexpr int64_t stride = 6 + DC;
    const S *render_raw = a.render_raw, *T_img = a.transmittance, *v_render = a.v_render, *v_alpha = a.v_alpha;
    const int32_t *used_img = a.used;
    S *v_means2d = a.v_means2d, *v_conics = a.v_conics, *v_opac = a.v_opacities, *v_colors = a.v_colors;
    S *v_bg = a.v_backgrounds;
    const int n_threads = a.n_threads;
    const int64_t per_cam = a.tiles_x * a.tiles_y, W = a.width, H = a.height, C = a.n_tiles / per_cam;
    const std::vector<S> packed = pack_gaussians(a, n_threads);
    const int nt = std::max(1, std::min<int>(n_threads, (int)std::max<int64_t>(1, a.n_tiles)));
    std::vector<std::vector<S>> scratch(nt, std::vector<S>((4 + DC) * P));
    std::vector<std::vector<S>> bufs(nt), bg_bufs(nt, std::vector<S>(C * DC, S(0)));
    parallel_for(nt, nt, [&](int, int64_t k) { bufs[k].assign(a.n_gaussians * stride, S(0)); });
    parallel_for(a.n_tiles, nt, [&](int thread, int64_t t) {
        const int64_t cam = t / per_cam, in_cam = t % per_cam;
        const int64_t ox = (in_cam % a.tiles_x) * B, oy = (in_cam / a.tiles_x) * B;
        S *sc = scratch[thread].data();
        S *T = sc, *G = sc + P, *gt = sc + 2 * P, *used = sc + 3 * P, *vc = sc + 4 * P;
        S *vbg = bg_bufs[thread].data() + cam * DC;
        int64_t n = 0;
        for (int p = 0; p < P; ++p) {
            const int u = p % B, v = p / B;
            T[p] = S(1), G[p] = S(0), gt[p] = S(0), used[p] = S(0);
            for (int k = 0; k < DC; ++k) vc[k * P + p] = S(0);
            if (ox + u >= W || oy + v >= H) continue;
            const int64_t pix = (cam * H + oy + v) * W + ox + u;
            const S Tp = T_img[pix], alpha = S(1) - Tp;
            S vA = v_alpha[pix], total = 0;
            for (int k = 0; k < DC; ++k) {
                S gk = v_render[pix * DC + k];
                if (a.expected_depth && k == DC - 1) {  // out = raw / max(alpha, 1e-10)
                    const S den = std::max(alpha, S(1e-10));
                    if (alpha >= S(1e-10)) vA -= gk * render_raw[pix * DC + k] / (den * den);
                    gk = gk / den;
                }
                vc[k * P + p] = gk;
                total += gk * render_raw[pix * DC + k];
                if (a.backgrounds) vbg[k] += Tp * gk;
            }
            // G_total = a.(C_fg + T bg) - T dL/dA, with dL/dA counted through alpha = 1 - T
            gt[p] = total - Tp * vA;
            used[p] = S(used_img[pix]);
            n = std::max<int64_t>(n, used_img[pix]);
        }
        if (n > 0)
            backward_tile<S, B, DC>(packed.data(), a.gauss_ids + a.start[t], n, a.rects, a.sigma_cut, ox, oy,
                                    bufs[thread].data(), sc);
    });
    const int64_t block = 8192;
    parallel_for((a.n_gaussians + block - 1) / block, nt, [&](int, int64_t b) {
        for (int64_t i = b * block; i < std::min(a.n_gaussians, (b + 1) * block); ++i) {
            S r[stride];
            for (int k = 0; k < stride; ++k) r[k] = bufs[0][i * stride + k];
            for (int th = 1; th < nt; ++th)
                for (int k = 0; k < stride; ++k) r[k] += bufs[th][i * stride + k];
            v_means2d[2 * i] = r[0], v_means2d[2 * i + 1] = r[1];
            v_conics[3 * i] = r[2], v_conics[3 * i + 1] = r[3], v_conics[3 * i + 2] = r[4];
            v_opac[i] = r[5];
            for (int k = 0; k < DC; ++k) v_colors[i * DC + k] = r[6 + k];
        }
    });
    if (v_bg) {
        for (int64_t i = 0; i < C * DC; ++i) {
            S acc = 0;
            for (int th = 0; th < nt; ++th) acc += bg_bufs[th][i];
            v_bg[i] = acc;
        }
    }
}

template <typename S>
void composite_forward(const CompositeArgs<S> &a) {
    // only 3 (RGB) / 4 (RGB + depth) channels on 8x8 or 16x16 tiles; Python checks
    if (a.block == 8 && a.n_channels == 3) return forward_all<S, 8, 3>(a);
    if (a.block == 8 && a.n_channels == 4) return forward_all<S, 8, 4>(a);
    if (a.block == 16 && a.n_channels == 3) return forward_all<S, 16, 3>(a);
    if (a.block == 16 && a.n_channels == 4) return forward_all<S, 16, 4>(a);
}

template <typename S>
void composite_backward(const CompositeArgs<S> &a) {
    if (a.block == 8 && a.n_channels == 3) return backward_all<S, 8, 3>(a);
    if (a.block == 8 && a.n_channels == 4) return backward_all<S, 8, 4>(a);
    if (a.block == 16 && a.n_channels == 3) return backward_all<S, 16, 3>(a);
    if (a.block == 16 && a.n_channels == 4) return backward_all<S, 16, 4>(a);
}

// ---------------------------------------------------------------------------------------
// Projection + SH colours (forward and vector-Jacobian product), gsplat's conventions.
// ---------------------------------------------------------------------------------------

// Value with its gradient w.r.t. a 3-vector (forward-mode AD for the SH direction term).
template <typename S>
struct Dual3 {
    S v, d0, d1, d2;
};
template <typename S> inline Dual3<S> operator+(Dual3<S> a, Dual3<S> b) { return {a.v + b.v, a.d0 + b.d0, a.d1 + b.d1, a.d2 + b.d2}; }
template <typename S> inline Dual3<S> operator-(Dual3<S> a, Dual3<S> b) { return {a.v - b.v, a.d0 - b.d0, a.d1 - b.d1, a.d2 - b.d2}; }
template <typename S> inline Dual3<S> operator*(Dual3<S> a, Dual3<S> b) {
    return {a.v * b.v, a.d0 * b.v + a.v * b.d0, a.d1 * b.v + a.v * b.d1, a.d2 * b.v + a.v * b.d2};
}
template <typename S> inline Dual3<S> operator*(S k, Dual3<S> a) { return {k * a.v, k * a.d0, k * a.d1, k * a.d2}; }
template <typename S> inline Dual3<S> operator+(Dual3<S> a, S k) { return {a.v + k, a.d0, a.d1, a.d2}; }
template <typename S> inline Dual3<S> operator-(Dual3<S> a, S k) { return {a.v - k, a.d0, a.d1, a.d2}; }
template <typename S> inline Dual3<S> operator-(S k, Dual3<S> a) { return {k - a.v, -a.d0, -a.d1, -a.d2}; }

// gsplat's real SH basis (Sloan's closed forms, gsplat's constants) at a unit direction;
// U is S or Dual3<S>. out[(degree + 1)^2].
template <typename S, typename U>
void sh_basis(int degree, U x, U y, U z, U *out) {
    out[0] = U{} + S(0.2820947917738781);
    if (degree < 1) return;
    const S c1 = S(0.48860251190292);
    out[1] = S(-c1) * y;
    out[2] = c1 * z;
    out[3] = S(-c1) * x;
    if (degree < 2) return;
    const U zz = z * z;
    const U cos1 = x * x - y * y, sin1 = S(2) * (x * y);
    const U nz = S(-1.092548430592079) * z;
    out[4] = S(0.5462742152960395) * sin1;
    out[5] = nz * y;
    out[6] = S(0.9461746957575601) * zz - S(0.3153915652525201);
    out[7] = nz * x;
    out[8] = S(0.5462742152960395) * cos1;
    if (degree < 3) return;
    const U cos2 = x * cos1 - y * sin1, sin2 = x * sin1 + y * cos1;
    const U b3zz = S(0.4570457994644658) - S(2.285228997322329) * zz;
    const U b3z = S(1.445305721320277) * z;
    out[9] = S(-0.5900435899266435) * sin2;
    out[10] = b3z * sin1;
    out[11] = b3zz * y;
    out[12] = z * (S(1.865881662950577) * zz - S(1.119528997770346));
    out[13] = b3zz * x;
    out[14] = b3z * cos1;
    out[15] = S(-0.5900435899266435) * cos2;
    if (degree < 4) return;
    const U cos3 = x * cos2 - y * sin2, sin3 = x * sin2 + y * cos2;
    const U b4zzz = z * (S(2.007139630671868) - S(4.683325804901025) * zz);
    const U b4zz = S(3.31161143515146) * zz - S(0.47308734787878);
    const U b4z = S(-1.770130769779931) * z;
    out[16] = S(0.6258357354491763) * sin3;
    out[17] = b4z * sin2;
    out[18] = b4zz * sin1;
    out[19] = b4zzz * y;
    out[20] = S(1.984313483298443) * (z * out[12]) - S(1.006230589874905) * out[6];
    out[21] = b4zzz * x;
    out[22] = b4zz * cos1;
    out[23] = b4z * cos2;
    out[24] = S(0.6258357354491763) * cos3;
}

// Per-camera constants.
template <typename S>
struct CamConst {
    S R[9], t[3], fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg;
};

template <typename S>
CamConst<S> camera_constants(const ProjectArgs<S> &a, int64_t c) {
    CamConst<S> k;
    const S *V = a.viewmats + 16 * c, *Kc = a.Ks + 9 * c;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) k.R[3 * i + j] = V[4 * i + j];
        k.t[i] = V[4 * i + 3];
    }
    k.fx = Kc[0], k.fy = Kc[4], k.cx = Kc[2], k.cy = Kc[5];
    const S W = S(a.width), H = S(a.height);
    const S htx = S(0.3) * (S(0.5) * W / k.fx), hty = S(0.3) * (S(0.5) * H / k.fy);
    k.lim_x_pos = (W - k.cx) / k.fx + htx;
    k.lim_x_neg = k.cx / k.fx + htx;
    k.lim_y_pos = (H - k.cy) / k.fy + hty;
    k.lim_y_neg = k.cy / k.fy + hty;
    return k;
}

// Rotation R(q / |q|) (row-major) and M = R diag(s).
template <typename S>
void rotation_scale(const S *q, const S *s, S *R, S *M, S qn[4], S &qnorm) {
    qnorm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    for (int i = 0; i < 4; ++i) qn[i] = q[i] / qnorm;
    const S w = qn[0], x = qn[1], y = qn[2], z = qn[3];
    R[0] = 1 - 2 * (y * y + z * z), R[1] = 2 * (x * y - w * z), R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z), R[4] = 1 - 2 * (x * x + z * z), R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y), R[7] = 2 * (y * z + w * x), R[8] = 1 - 2 * (x * x + y * y);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) M[3 * i + j] = R[3 * i + j] * s[j];
}

// Forward intermediates of one (camera, Gaussian) pair.
template <typename S>
struct ProjState {
    S p[3];     // camera-space mean
    S A[9];     // W M
    S rz, ux, uy;
    bool ux_free, uy_free;  // clamp inactive
    S ex[3], ey[3], rx[3], ry[3];  // rows before / after the fx rz, fy rz factors
    S cxx, cxy, cyy, det;
    bool depth_ok;
};

template <typename S>
void project_one(const CamConst<S> &k, const S *mean, const S *M, const ProjectArgs<S> &a, ProjState<S> &st) {
    for (int i = 0; i < 3; ++i)
        st.p[i] = k.R[3 * i] * mean[0] + k.R[3 * i + 1] * mean[1] + k.R[3 * i + 2] * mean[2] + k.t[i];
    const S z = st.p[2];
    st.depth_ok = z >= S(a.near_plane) && z <= S(a.far_plane);
    st.rz = S(1) / (st.depth_ok ? z : S(1));
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            st.A[3 * i + j] = k.R[3 * i] * M[j] + k.R[3 * i + 1] * M[3 + j] + k.R[3 * i + 2] * M[6 + j];
    const S xr = st.p[0] * st.rz, yr = st.p[1] * st.rz;
    st.ux = std::min(std::max(xr, -k.lim_x_neg), k.lim_x_pos);
    st.uy = std::min(std::max(yr, -k.lim_y_neg), k.lim_y_pos);
    st.ux_free = xr <= k.lim_x_pos && xr >= -k.lim_x_neg;
    st.uy_free = yr <= k.lim_y_pos && yr >= -k.lim_y_neg;
    const S kx = k.fx * st.rz, ky = k.fy * st.rz;
    for (int j = 0; j < 3; ++j) {
        st.ex[j] = st.A[j] - st.ux * st.A[6 + j];
        st.ey[j] = st.A[3 + j] - st.uy * st.A[6 + j];
        st.rx[j] = kx * st.ex[j];
        st.ry[j] = ky * st.ey[j];
    }
    st.cxx = st.rx[0] * st.rx[0] + st.rx[1] * st.rx[1] + st.rx[2] * st.rx[2] + S(a.eps2d);
    st.cxy = st.rx[0] * st.ry[0] + st.rx[1] * st.ry[1] + st.rx[2] * st.ry[2];
    st.cyy = st.ry[0] * st.ry[0] + st.ry[1] * st.ry[1] + st.ry[2] * st.ry[2] + S(a.eps2d);
    st.det = st.cxx * st.cyy - st.cxy * st.cxy;
}

template <typename S>
void project_forward(const ProjectArgs<S> &a) {
    int32_t *radii = a.radii, *rects = a.rects, *tiles_per_gauss = a.tiles_per_gauss;
    S *means2d = a.means2d, *depths = a.depths, *conics = a.conics, *colors = a.colors, *sigma_cut = a.sigma_cut;
    const int n_threads = a.n_threads;
    const int64_t DC = 3 + (a.expected_depth ? 1 : 0);
    std::vector<CamConst<S>> cams;
    for (int64_t c = 0; c < a.n_cameras; ++c) cams.push_back(camera_constants(a, c));
    const int64_t gs_tx = (a.width + 15) / 16, gs_ty = (a.height + 15) / 16;
    const int64_t block = 2048, n_blocks = (a.n_gaussians + block - 1) / block;
    const int n_bases = a.sh_degree >= 0 ? (a.sh_degree + 1) * (a.sh_degree + 1) : 0;
    parallel_for(n_blocks, n_threads, [&](int, int64_t b) {
        S basis[25];
        for (int64_t n = b * block; n < std::min(a.n_gaussians, (b + 1) * block); ++n) {
            S R[9], M[9], qn[4], qnorm;
            rotation_scale(a.quats + 4 * n, a.scales + 3 * n, R, M, qn, qnorm);
            const S *mean = a.means + 3 * n;
            for (int64_t c = 0; c < a.n_cameras; ++c) {
                const int64_t i = c * a.n_gaussians + n;
                const CamConst<S> &k = cams[c];
                ProjState<S> st;
                project_one(k, mean, M, a, st);
                depths[i] = st.p[2];
                if (colors && a.expected_depth) colors[DC * i + 3] = st.p[2];
                tiles_per_gauss[i] = 0;
                const S mx = k.fx * st.p[0] * st.rz + k.cx, my = k.fy * st.p[1] * st.rz + k.cy;
                const S hb = S(0.5) * (st.cxx + st.cyy);
                const S v1 = hb + std::sqrt(std::max(hb * hb - st.det, S(0.01)));
                const S radius = std::ceil(S(3) * std::sqrt(v1));
                const bool valid = st.depth_ok && st.det > S(0) && radius > S(a.radius_clip) && mx + radius > S(0) &&
                                   mx - radius < S(a.width) && my + radius > S(0) && my - radius < S(a.height);
                int32_t *rect = rects + 4 * i;
                rect[0] = rect[1] = rect[2] = rect[3] = 0;
                sigma_cut[i] = S(0);
                if (!valid) {
                    radii[i] = 0;
                    means2d[2 * i] = means2d[2 * i + 1] = S(0);
                    conics[3 * i] = conics[3 * i + 1] = conics[3 * i + 2] = S(0);
                    if (colors) colors[DC * i] = colors[DC * i + 1] = colors[DC * i + 2] = S(0);
                    continue;
                }
                radii[i] = (int32_t)radius;
                means2d[2 * i] = mx;
                means2d[2 * i + 1] = my;
                const S inv = S(1) / st.det;
                conics[3 * i] = st.cyy * inv;
                conics[3 * i + 1] = -st.cxy * inv;
                conics[3 * i + 2] = st.cxx * inv;
                if (colors) {
                    const S *cp = a.campos + 3 * c;
                    S d[3] = {mean[0] - cp[0], mean[1] - cp[1], mean[2] - cp[2]};
                    const S norm = std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), S(1e-12));
                    sh_basis<S, S>(a.sh_degree, d[0] / norm, d[1] / norm, d[2] / norm, basis);
                    const S *coef = a.sh + c * a.sh_cam_stride + n * a.n_sh_coeffs * 3;
                    for (int ch = 0; ch < 3; ++ch) {
                        S v = 0;
                        for (int kb = 0; kb < n_bases; ++kb) v += basis[kb] * coef[3 * kb + ch];
                        colors[DC * i + ch] = std::max(v + S(0.5), S(0));
                    }
                }
                // gsplat's 16-pixel tile rectangle (meta "tiles_per_gauss"), then the footprint:
                // that rectangle cut to the alpha >= 1/255 box.
                const S tr = S(radii[i]) / S(16), tx = mx / S(16), ty = my / S(16);
                const int64_t x0 = std::min<int64_t>(std::max<int64_t>((int64_t)std::floor(tx - tr), 0), gs_tx);
                const int64_t x1 = std::min<int64_t>(std::max<int64_t>((int64_t)std::ceil(tx + tr), 0), gs_tx);
                const int64_t y0 = std::min<int64_t>(std::max<int64_t>((int64_t)std::floor(ty - tr), 0), gs_ty);
                const int64_t y1 = std::min<int64_t>(std::max<int64_t>((int64_t)std::ceil(ty + tr), 0), gs_ty);
                tiles_per_gauss[i] = (int32_t)((x1 - x0) * (y1 - y0));
                const S o = a.opacities[n];
                if (!(o >= S(1.0 / 255.0))) continue;
                const double level = std::max(std::log(255.0 * (double)o), 0.0);
                const double ext_x = std::sqrt(2.0 * level * (double)st.cxx) * 1.001 + 1e-3;
                const double ext_y = std::sqrt(2.0 * level * (double)st.cyy) * 1.001 + 1e-3;
                const double big = (double)std::max(a.width, a.height) + 2.0;
                auto clampd = [](double v, double lo, double hi) { return std::min(std::max(v, lo), hi); };
                int64_t px0 = (int64_t)std::ceil(clampd((double)mx - ext_x - 0.5, -1.0, big));
                int64_t px1 = (int64_t)std::floor(clampd((double)mx + ext_x - 0.5, -2.0, big)) + 1;
                int64_t py0 = (int64_t)std::ceil(clampd((double)my - ext_y - 0.5, -1.0, big));
                int64_t py1 = (int64_t)std::floor(clampd((double)my + ext_y - 0.5, -2.0, big)) + 1;
                px0 = std::max<int64_t>(std::max<int64_t>(px0, x0 * 16), 0);
                px1 = std::min<int64_t>(std::min<int64_t>(px1, x1 * 16), a.width);
                py0 = std::max<int64_t>(std::max<int64_t>(py0, y0 * 16), 0);
                py1 = std::min<int64_t>(std::min<int64_t>(py1, y1 * 16), a.height);
                rect[0] = (int32_t)px0, rect[1] = (int32_t)px1, rect[2] = (int32_t)py0, rect[3] = (int32_t)py1;
                sigma_cut[i] = S(level * (1 + 1e-5) + 1e-5);
            }
        }
    });
}

template <typename S>
void project_backward(const ProjectArgs<S> &a) {
    const int32_t *radii = a.radii;
    const S *v_means2d = a.v_means2d, *v_depths = a.v_depths, *v_conics = a.v_conics, *v_colors = a.v_colors;
    S *v_means = a.v_means, *v_quats = a.v_quats, *v_scales = a.v_scales, *v_sh = a.v_sh;
    const int n_threads = a.n_threads;
    std::vector<CamConst<S>> cams;
    for (int64_t c = 0; c < a.n_cameras; ++c) cams.push_back(camera_constants(a, c));
    const int64_t block = 2048, n_blocks = (a.n_gaussians + block - 1) / block;
    const int n_bases = a.sh_degree >= 0 ? (a.sh_degree + 1) * (a.sh_degree + 1) : 0;
    const int64_t DC = 3 + (a.expected_depth ? 1 : 0);
    parallel_for(n_blocks, n_threads, [&](int, int64_t b) {
        Dual3<S> dbasis[25];
        S basis[25];
        for (int64_t n = b * block; n < std::min(a.n_gaussians, (b + 1) * block); ++n) {
            S R[9], M[9], qn[4], qnorm;
            rotation_scale(a.quats + 4 * n, a.scales + 3 * n, R, M, qn, qnorm);
            const S *mean = a.means + 3 * n;
            const S *s = a.scales + 3 * n;
            S g_mean[3] = {0, 0, 0}, g_M[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
            if (v_sh) {  // this task owns Gaussian n's coefficient gradients: clear them
                for (int64_t c = 0; c < (a.sh_cam_stride ? a.n_cameras : 1); ++c)
                    std::fill(v_sh + c * a.sh_cam_stride + n * a.n_sh_coeffs * 3,
                              v_sh + c * a.sh_cam_stride + (n + 1) * a.n_sh_coeffs * 3, S(0));
            }
            for (int64_t c = 0; c < a.n_cameras; ++c) {
                const int64_t i = c * a.n_gaussians + n;
                // depth is always an output (it feeds the expected-depth channel)
                S g_p[3] = {0, 0, v_depths ? v_depths[i] : S(0)};
                if (v_colors && a.expected_depth) g_p[2] += v_colors[DC * i + 3];
                if (radii[i] > 0) {
                    const CamConst<S> &k = cams[c];
                    ProjState<S> st;
                    project_one(k, mean, M, a, st);
                    // conic = inverse of the dilated covariance: dL/dSigma = -Q V Q
                    const S inv = S(1) / st.det;
                    const S qa = st.cyy * inv, qb = -st.cxy * inv, qc = st.cxx * inv;
                    const S va = v_conics ? v_conics[3 * i] : S(0), vb = v_conics ? S(0.5) * v_conics[3 * i + 1] : S(0),
                            vc = v_conics ? v_conics[3 * i + 2] : S(0);
                    // QV
                    const S t00 = qa * va + qb * vb, t01 = qa * vb + qb * vc;
                    const S t10 = qb * va + qc * vb, t11 = qb * vb + qc * vc;
                    const S g_xx = -(t00 * qa + t01 * qb);
                    const S g_xy = -(t00 * qb + t01 * qc) - (t10 * qa + t11 * qb);
                    const S g_yy = -(t10 * qb + t11 * qc);
                    S g_rx[3], g_ry[3];
                    for (int j = 0; j < 3; ++j) {
                        g_rx[j] = S(2) * g_xx * st.rx[j] + g_xy * st.ry[j];
                        g_ry[j] = S(2) * g_yy * st.ry[j] + g_xy * st.rx[j];
                    }
                    // r = (f rz) e, e = A_row - u A_2
                    const S kx = k.fx * st.rz, ky = k.fy * st.rz;
                    S g_kx = 0, g_ky = 0, g_ux = 0, g_uy = 0, g_A[9];
                    for (int j = 0; j < 3; ++j) {
                        g_kx += g_rx[j] * st.ex[j];
                        g_ky += g_ry[j] * st.ey[j];
                        const S gex = kx * g_rx[j], gey = ky * g_ry[j];
                        g_A[j] = gex;
                        g_A[3 + j] = gey;
                        g_A[6 + j] = -st.ux * gex - st.uy * gey;
                        g_ux -= gex * st.A[6 + j];
                        g_uy -= gey * st.A[6 + j];
                    }
                    S g_rz = k.fx * g_kx + k.fy * g_ky;
                    // mean2d = (fx x rz + cx, fy y rz + cy)
                    const S vmx = v_means2d ? v_means2d[2 * i] : S(0), vmy = v_means2d ? v_means2d[2 * i + 1] : S(0);
                    g_p[0] += k.fx * st.rz * vmx;
                    g_p[1] += k.fy * st.rz * vmy;
                    g_rz += k.fx * st.p[0] * vmx + k.fy * st.p[1] * vmy;
                    // u = clamp(x rz)
                    if (st.ux_free) {
                        g_p[0] += st.rz * g_ux;
                        g_rz += st.p[0] * g_ux;
                    }
                    if (st.uy_free) {
                        g_p[1] += st.rz * g_uy;
                        g_rz += st.p[1] * g_uy;
                    }
                    g_p[2] += -st.rz * st.rz * g_rz;
                    // A = W M  =>  dM = W^T dA
                    for (int r = 0; r < 3; ++r)
                        for (int j = 0; j < 3; ++j)
                            g_M[3 * r + j] += k.R[r] * g_A[j] + k.R[3 + r] * g_A[3 + j] + k.R[6 + r] * g_A[6 + j];
                    // SH colour
                    if (v_colors && n_bases > 0) {
                        const S *cp = a.campos + 3 * c;
                        const S d[3] = {mean[0] - cp[0], mean[1] - cp[1], mean[2] - cp[2]};
                        const S norm_raw = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
                        const S norm = std::max(norm_raw, S(1e-12));
                        const S u[3] = {d[0] / norm, d[1] / norm, d[2] / norm};
                        const S *coef = a.sh + c * a.sh_cam_stride + n * a.n_sh_coeffs * 3;
                        S *g_coef = v_sh + c * a.sh_cam_stride + n * a.n_sh_coeffs * 3;
                        const bool need_dir = a.sh_degree > 0;
                        if (need_dir) {
                            sh_basis<S, Dual3<S>>(a.sh_degree, Dual3<S>{u[0], 1, 0, 0}, Dual3<S>{u[1], 0, 1, 0},
                                                  Dual3<S>{u[2], 0, 0, 1}, dbasis);
                            for (int kb = 0; kb < n_bases; ++kb) basis[kb] = dbasis[kb].v;
                        } else {
                            sh_basis<S, S>(0, u[0], u[1], u[2], basis);
                        }
                        S g_raw[3];
                        for (int ch = 0; ch < 3; ++ch) {
                            S v = 0;
                            for (int kb = 0; kb < n_bases; ++kb) v += basis[kb] * coef[3 * kb + ch];
                            g_raw[ch] = (v + S(0.5) >= S(0)) ? v_colors[DC * i + ch] : S(0);
                        }
                        S g_u[3] = {0, 0, 0};
                        for (int kb = 0; kb < n_bases; ++kb) {
                            S w = 0;
                            for (int ch = 0; ch < 3; ++ch) {
                                g_coef[3 * kb + ch] += basis[kb] * g_raw[ch];
                                w += coef[3 * kb + ch] * g_raw[ch];
                            }
                            if (need_dir) {
                                g_u[0] += w * dbasis[kb].d0;
                                g_u[1] += w * dbasis[kb].d1;
                                g_u[2] += w * dbasis[kb].d2;
                            }
                        }
                        if (need_dir && norm_raw > S(1e-12)) {
                            const S dot = g_u[0] * u[0] + g_u[1] * u[1] + g_u[2] * u[2];
                            for (int j = 0; j < 3; ++j) g_mean[j] += (g_u[j] - dot * u[j]) / norm;
                        } else if (need_dir) {
                            for (int j = 0; j < 3; ++j) g_mean[j] += g_u[j] / norm;
                        }
                    }
                }
                // p = W mean + t
                const CamConst<S> &k = cams[c];
                for (int j = 0; j < 3; ++j) g_mean[j] += k.R[j] * g_p[0] + k.R[3 + j] * g_p[1] + k.R[6 + j] * g_p[2];
            }
            for (int j = 0; j < 3; ++j) v_means[3 * n + j] = g_mean[j];
            // M = R diag(s)
            S g_R[9];
            for (int j = 0; j < 3; ++j) {
                S gs = 0;
                for (int r = 0; r < 3; ++r) {
                    g_R[3 * r + j] = g_M[3 * r + j] * s[j];
                    gs += g_M[3 * r + j] * R[3 * r + j];
                }
                v_scales[3 * n + j] = gs;
            }
            // R(qn), then qn = q / |q|
            const S w = qn[0], x = qn[1], y = qn[2], z = qn[3];
            const S *v = g_R;
            S gq[4];
            gq[0] = 2 * (-z * v[1] + y * v[2] + z * v[3] - x * v[5] - y * v[6] + x * v[7]);
            gq[1] = 2 * (y * v[1] + z * v[2] + y * v[3] - 2 * x * v[4] - w * v[5] + z * v[6] + w * v[7] - 2 * x * v[8]);
            gq[2] = 2 * (-2 * y * v[0] + x * v[1] + w * v[2] + x * v[3] + z * v[5] - w * v[6] + z * v[7] - 2 * y * v[8]);
            gq[3] = 2 * (-2 * z * v[0] - w * v[1] + x * v[2] + w * v[3] - 2 * z * v[4] + y * v[5] + x * v[6] + y * v[7]);
            const S dot = gq[0] * qn[0] + gq[1] * qn[1] + gq[2] * qn[2] + gq[3] * qn[3];
            for (int j = 0; j < 4; ++j) v_quats[4 * n + j] = (gq[j] - dot * qn[j]) / qnorm;
        }
    });
}
// Order-preserving unsigned key of a float / double (negatives before positives).
inline uint32_t sort_key(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t sort_key(double x) {
    uint64_t u;
    std::memcpy(&u, &x, 8);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// Candidates (sigma_cut > 0) sorted front to back: stable LSD radix sort on the depth bits,
// ties keep index order (as gsplat's stable radix sort). Returns the number written.
template <typename S>
int64_t depth_order(const DepthOrderArgs<S> &a) {
    const S *depths = a.depths, *sigma_cut = a.sigma_cut;
    const int64_t M = a.n_entries;
    int64_t *out = a.out;
    typedef decltype(sort_key(S(0))) K;
    std::vector<K> keys, keys2;
    std::vector<int64_t> ids2;
    int64_t n = 0;
    for (int64_t i = 0; i < M; ++i)
        if (sigma_cut[i] > S(0)) out[n++] = i;
    if (n < 2) return n;
    keys.resize(n);
    keys2.resize(n);
    ids2.resize(n);
    for (int64_t i = 0; i < n; ++i) keys[i] = sort_key(depths[out[i]]);
    constexpr int bits = 11, radix = 1 << bits;
    int64_t *src_id = out, *dst_id = ids2.data();
    K *src_k = keys.data(), *dst_k = keys2.data();
    std::vector<int64_t> hist(radix);
    for (int shift = 0; shift < (int)(8 * sizeof(K)); shift += bits) {
        std::fill(hist.begin(), hist.end(), 0);
        for (int64_t i = 0; i < n; ++i) ++hist[(src_k[i] >> shift) & (radix - 1)];
        if (hist[(src_k[0] >> shift) & (radix - 1)] == n) continue;  // all equal in this digit
        int64_t total = 0;
        for (int b = 0; b < radix; ++b) {
            const int64_t c = hist[b];
            hist[b] = total;
            total += c;
        }
        for (int64_t i = 0; i < n; ++i) {
            const int64_t pos = hist[(src_k[i] >> shift) & (radix - 1)]++;
            dst_k[pos] = src_k[i];
            dst_id[pos] = src_id[i];
        }
        std::swap(src_k, dst_k);
        std::swap(src_id, dst_id);
    }
    if (src_id != out) std::copy(src_id, src_id + n, out);
    return n;
}

}  // namespace

// Layout of the struct a kernel takes, and of its result: the fields' descriptions, then
// "sizeof N;" and "returns K N;" (kind and size; "returns void;").
template <typename R>
std::string describe_result() {
    std::string out;
    describe_field<R>(out, "returns", 0);
    return out;
}
template <>
std::string describe_result<void>() {
    return "returns void;";
}
template <typename R, typename A>
std::string describe_kernel(R (*)(const A *)) {
    std::string out;
    A::describe(out);
    return out + "sizeof " + std::to_string(sizeof(A)) + ';' + describe_result<R>();
}

extern "C" {

int psn_abi_version() { return 10; }

int64_t psn_depth_order_f32(const DepthOrderArgs<float> *a) { return depth_order(*a); }
int64_t psn_depth_order_f64(const DepthOrderArgs<double> *a) { return depth_order(*a); }

// Count, per tile, the Gaussians of `order` (flat ids, camera = id / n_per_cam) whose pixel
// rectangle overlaps it.
void psn_bin_count(const BinArgs *args) {
    const BinArgs a = *args;  // a local copy: its fields stay in registers
    const int64_t per_cam = a.tiles_x * a.tiles_y, block = a.block, tiles_x = a.tiles_x;
    for (int64_t i = 0; i < a.n_order; ++i) {
        const int64_t gid = a.order[i];
        const int32_t *r = a.rects + 4 * gid;
        if (r[0] >= r[1] || r[2] >= r[3]) continue;
        const int64_t base = (gid / a.n_per_cam) * per_cam;
        const int64_t tx0 = r[0] / block, tx1 = (r[1] - 1) / block, ty0 = r[2] / block, ty1 = (r[3] - 1) / block;
        for (int64_t ty = ty0; ty <= ty1; ++ty)
            for (int64_t tx = tx0; tx <= tx1; ++tx) ++a.count[base + ty * tiles_x + tx];
    }
}

// Fill the tile lists in the order of `order` (front to back); `cursor` starts as the
// tiles' start offsets and is advanced.
void psn_bin_fill(const BinArgs *args) {
    const BinArgs a = *args;  // a local copy: its fields stay in registers
    const int64_t per_cam = a.tiles_x * a.tiles_y, block = a.block, tiles_x = a.tiles_x;
    for (int64_t i = 0; i < a.n_order; ++i) {
        const int64_t gid = a.order[i];
        const int32_t *r = a.rects + 4 * gid;
        if (r[0] >= r[1] || r[2] >= r[3]) continue;
        const int64_t base = (gid / a.n_per_cam) * per_cam;
        const int64_t tx0 = r[0] / block, tx1 = (r[1] - 1) / block, ty0 = r[2] / block, ty1 = (r[3] - 1) / block;
        for (int64_t ty = ty0; ty <= ty1; ++ty)
            for (int64_t tx = tx0; tx <= tx1; ++tx) a.gauss_ids[a.cursor[base + ty * tiles_x + tx]++] = gid;
    }
}

// The kernels work on a local copy of their arguments: memory nothing else can write, so
// the compiler may keep its fields in registers.
void psn_composite_fwd_f32(const CompositeArgs<float> *a) { composite_forward(CompositeArgs<float>(*a)); }
void psn_composite_fwd_f64(const CompositeArgs<double> *a) { composite_forward(CompositeArgs<double>(*a)); }
void psn_composite_bwd_f32(const CompositeArgs<float> *a) { composite_backward(CompositeArgs<float>(*a)); }
void psn_composite_bwd_f64(const CompositeArgs<double> *a) { composite_backward(CompositeArgs<double>(*a)); }

void psn_project_fwd_f32(const ProjectArgs<float> *a) { project_forward(ProjectArgs<float>(*a)); }
void psn_project_fwd_f64(const ProjectArgs<double> *a) { project_forward(ProjectArgs<double>(*a)); }
void psn_project_bwd_f32(const ProjectArgs<float> *a) { project_backward(ProjectArgs<float>(*a)); }
void psn_project_bwd_f64(const ProjectArgs<double> *a) { project_backward(ProjectArgs<double>(*a)); }

// Writes the layout of exported kernel `function` (see describe_kernel) to out, NUL-terminated
// if it fits in capacity bytes, and returns its length; -1 for a name not listed here.
int64_t psn_layout(const char *function, char *out, int64_t capacity) {
    std::string layout;
#define PSN_KERNEL(fn) \
    if (std::strcmp(function, #fn) == 0) layout = describe_kernel(&fn);
    PSN_KERNEL(psn_depth_order_f32)
    PSN_KERNEL(psn_depth_order_f64)
    PSN_KERNEL(psn_bin_count)
    PSN_KERNEL(psn_bin_fill)
    PSN_KERNEL(psn_composite_fwd_f32)
    PSN_KERNEL(psn_composite_fwd_f64)
    PSN_KERNEL(psn_composite_bwd_f32)
    PSN_KERNEL(psn_composite_bwd_f64)
    PSN_KERNEL(psn_project_fwd_f32)
    PSN_KERNEL(psn_project_fwd_f64)
    PSN_KERNEL(psn_project_bwd_f32)
    PSN_KERNEL(psn_project_bwd_f64)
#undef PSN_KERNEL
    if (layout.empty()) return -1;
    if ((int64_t)layout.size() < capacity) std::memcpy(out, layout.c_str(), layout.size() + 1);
    return (int64_t)layout.size();
}

}  // extern "C"
