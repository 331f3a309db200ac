// CPU kernels of the pixelsplat_ns rasteriser (tile binning, forward and backward
// compositing) with gsplat 1.4.0's per-pixel rules. Plain C ABI (called through ctypes on
// tensors' data pointers): no Torch headers, so it compiles in seconds.
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
#include <cstdint>
#include <cstring>
#include <atomic>
#include <thread>
#include <vector>

namespace {

// Run f(thread, i) for i in [0, n) on n_threads threads (dynamic scheduling). Plain
// std::thread rather than OpenMP: no spinning worker pool competing with Torch's.
template <typename F>
void parallel_for(int64_t n, int n_threads, F f) {
    n_threads = (int)std::max<int64_t>(1, std::min<int64_t>(n_threads, n));
    if (n_threads == 1) {
        for (int64_t i = 0; i < n; ++i) f(0, i);
        return;
    }
    std::atomic<int64_t> next{0};
    auto work = [&](int thread) {
        for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) f(thread, i);
    };
    std::vector<std::thread> pool;
    for (int k = 1; k < n_threads; ++k) pool.emplace_back(work, k);
    work(0);
    for (auto &t : pool) t.join();
}

struct Grid {
    int64_t block, tiles_x, tiles_y, width, height, n_tiles;
};

// Per-tile pixel window of a Gaussian: [x0, x1) x [y0, y1) in global pixel coordinates.
inline bool clip_rect(const int32_t *rect, int64_t ox, int64_t oy, const Grid &g, int64_t &x0, int64_t &x1,
                      int64_t &y0, int64_t &y1) {
    x0 = std::max<int64_t>(rect[0], ox);
    x1 = std::min<int64_t>(rect[1], std::min(ox + g.block, g.width));
    y0 = std::max<int64_t>(rect[2], oy);
    y1 = std::min<int64_t>(rect[3], std::min(oy + g.block, g.height));
    return x0 < x1 && y0 < y1;
}

// gsplat's alpha: returns false when the Gaussian is skipped at this pixel.
template <typename S>
inline bool eval_alpha(const S *gp, S sigma_cut, S dx, S dy, S &vis, S &alpha) {
    const S sigma = S(0.5) * (gp[2] * dx * dx + gp[4] * dy * dy) + gp[3] * dx * dy;
    if (sigma < S(0) || sigma > sigma_cut) return false;  // sigma > cut => alpha < 1/255
    vis = std::exp(-sigma);
    alpha = std::min(S(0.999), gp[5] * vis);
    return !(alpha < S(1.0f / 255.0f));
}

template <typename S, int DC>
void forward_impl(const S *packed, int64_t D_rt, const int64_t *ids, const int64_t *start, const int64_t *count,
                  const int32_t *rects, const S *sigma_cut, Grid g, S *T_out, S *acc_out, int32_t *consumed_out,
                  int n_threads) {
    const int64_t D = DC > 0 ? DC : D_rt;
    const int64_t stride = 6 + D;
    const int64_t P = g.block * g.block;
    const int64_t per_cam = g.tiles_x * g.tiles_y;
    std::vector<std::vector<uint8_t>> done_per_thread(std::max(1, n_threads), std::vector<uint8_t>(P));
    parallel_for(g.n_tiles, n_threads, [&](int thread, int64_t t) {
            std::vector<uint8_t> &done = done_per_thread[thread];
            S *T = T_out + t * P;
            S *acc = acc_out + t * P * D;
            int32_t *used = consumed_out + t * P;
            const int64_t n = count[t];
            for (int64_t p = 0; p < P; ++p) {
                T[p] = S(1);
                used[p] = (int32_t)n;
            }
            std::fill(acc, acc + P * D, S(0));
            if (n == 0) return;
            const int64_t in_cam = t % per_cam;
            const int64_t ox = (in_cam % g.tiles_x) * g.block, oy = (in_cam / g.tiles_x) * g.block;
            const int64_t n_pix = (std::min(ox + g.block, g.width) - ox) * (std::min(oy + g.block, g.height) - oy);
            std::fill(done.begin(), done.end(), 0);
            int64_t n_done = 0;
            const int64_t *list = ids + start[t];
            for (int64_t j = 0; j < n && n_done < n_pix; ++j) {
                const int64_t gid = list[j];
                int64_t x0, x1, y0, y1;
                if (!clip_rect(rects + 4 * gid, ox, oy, g, x0, x1, y0, y1)) continue;
                const S *gp = packed + gid * stride;
                const S cut = sigma_cut[gid];
                const S *col = gp + 6;
                for (int64_t y = y0; y < y1; ++y) {
                    const S dy = gp[1] - (S(y) + S(0.5));
                    const int64_t row = (y - oy) * g.block - ox;
                    for (int64_t x = x0; x < x1; ++x) {
                        const int64_t p = row + x;
                        if (done[p]) continue;
                        const S dx = gp[0] - (S(x) + S(0.5));
                        S vis, alpha;
                        if (!eval_alpha(gp, cut, dx, dy, vis, alpha)) continue;
                        const S next_T = T[p] * (S(1) - alpha);
                        if ((double)next_T <= 1e-4) {  // gsplat: this Gaussian is not composited
                            done[p] = 1;
                            used[p] = (int32_t)j;
                            ++n_done;
                            continue;
                        }
                        const S w = alpha * T[p];
                        S *a = acc + p * D;
                        for (int64_t k = 0; k < D; ++k) a[k] += col[k] * w;
                        T[p] = next_T;
                    }
                }
            }
    });
}

template <typename S, int DC>
void backward_impl(const S *packed, int64_t D_rt, int64_t M, const int64_t *ids, const int64_t *start,
                   const int32_t *rects, const S *sigma_cut, Grid g, const int32_t *consumed, const S *v_color,
                   const S *g_total, S *grads, int n_threads) {
    const int64_t D = DC > 0 ? DC : D_rt;
    const int64_t stride = 6 + D;
    const int64_t P = g.block * g.block;
    const int64_t per_cam = g.tiles_x * g.tiles_y;
    const int nt = std::max(1, n_threads);
    std::vector<std::vector<S>> T_per_thread(nt, std::vector<S>(P)), G_per_thread(nt, std::vector<S>(P));
    std::vector<std::vector<S>> gcol_per_thread(nt, std::vector<S>(D));
    parallel_for(g.n_tiles, n_threads, [&](int thread, int64_t t) {
            S *buf = grads + (int64_t)thread * M * stride;
            std::vector<S> &T = T_per_thread[thread], &G = G_per_thread[thread], &gcol = gcol_per_thread[thread];
            const int32_t *used = consumed + t * P;
            int64_t n = 0;
            for (int64_t p = 0; p < P; ++p) n = std::max<int64_t>(n, used[p]);
            if (n == 0) return;
            std::fill(T.begin(), T.end(), S(1));
            std::fill(G.begin(), G.end(), S(0));
            const S *vc = v_color + t * P * D;
            const S *gt = g_total + t * P;
            const int64_t in_cam = t % per_cam;
            const int64_t ox = (in_cam % g.tiles_x) * g.block, oy = (in_cam / g.tiles_x) * g.block;
            const int64_t *list = ids + start[t];
            for (int64_t j = 0; j < n; ++j) {
                const int64_t gid = list[j];
                int64_t x0, x1, y0, y1;
                if (!clip_rect(rects + 4 * gid, ox, oy, g, x0, x1, y0, y1)) continue;
                const S *gp = packed + gid * stride;
                const S cut = sigma_cut[gid];
                const S *col = gp + 6;
                const S ca = gp[2], cb = gp[3], cc = gp[4], opac = gp[5];
                S g_mx = 0, g_my = 0, g_a = 0, g_b = 0, g_c = 0, g_o = 0;
                std::fill(gcol.begin(), gcol.end(), S(0));
                bool any = false;
                for (int64_t y = y0; y < y1; ++y) {
                    const S dy = gp[1] - (S(y) + S(0.5));
                    const int64_t row = (y - oy) * g.block - ox;
                    for (int64_t x = x0; x < x1; ++x) {
                        const int64_t p = row + x;
                        if (j >= used[p]) continue;
                        const S dx = gp[0] - (S(x) + S(0.5));
                        S vis, alpha;
                        if (!eval_alpha(gp, cut, dx, dy, vis, alpha)) continue;
                        any = true;
                        const S *g_pix = vc + p * D;
                        S gc = 0;
                        for (int64_t k = 0; k < D; ++k) gc += g_pix[k] * col[k];
                        const S Tp = T[p];
                        const S w = alpha * Tp;
                        const S upto = G[p] + w * gc;
                        const S v_alpha = Tp * gc - (gt[p] - upto) / (S(1) - alpha);
                        G[p] = upto;
                        T[p] = Tp * (S(1) - alpha);
                        for (int64_t k = 0; k < D; ++k) gcol[k] += w * g_pix[k];
                        if (opac * vis <= S(0.999)) {
                            const S v_sigma = -opac * vis * v_alpha;
                            g_a += S(0.5) * v_sigma * dx * dx;
                            g_b += v_sigma * dx * dy;
                            g_c += S(0.5) * v_sigma * dy * dy;
                            g_mx += v_sigma * (ca * dx + cb * dy);
                            g_my += v_sigma * (cb * dx + cc * dy);
                            g_o += vis * v_alpha;
                        }
                    }
                }
                if (any) {
                    S *o = buf + gid * stride;
                    o[0] += g_mx;
                    o[1] += g_my;
                    o[2] += g_a;
                    o[3] += g_b;
                    o[4] += g_c;
                    o[5] += g_o;
                    for (int64_t k = 0; k < D; ++k) o[6 + k] += gcol[k];
                }
            }
    });
}

template <typename S>
void forward_dispatch(const S *packed, int64_t D, const int64_t *ids, const int64_t *start, const int64_t *count,
                      const int32_t *rects, const S *cut, Grid g, S *T, S *acc, int32_t *used, int nt) {
    switch (D) {
        case 3: return forward_impl<S, 3>(packed, D, ids, start, count, rects, cut, g, T, acc, used, nt);
        case 4: return forward_impl<S, 4>(packed, D, ids, start, count, rects, cut, g, T, acc, used, nt);
        default: return forward_impl<S, 0>(packed, D, ids, start, count, rects, cut, g, T, acc, used, nt);
    }
}

template <typename S>
void backward_dispatch(const S *packed, int64_t D, int64_t M, const int64_t *ids, const int64_t *start,
                       const int32_t *rects, const S *cut, Grid g, const int32_t *used, const S *vc, const S *gt,
                       S *grads, int nt) {
    switch (D) {
        case 3: return backward_impl<S, 3>(packed, D, M, ids, start, rects, cut, g, used, vc, gt, grads, nt);
        case 4: return backward_impl<S, 4>(packed, D, M, ids, start, rects, cut, g, used, vc, gt, grads, nt);
        default: return backward_impl<S, 0>(packed, D, M, ids, start, rects, cut, g, used, vc, gt, grads, nt);
    }
}

}  // namespace

extern "C" {

int psn_abi_version() { return 2; }

// Count, per tile, the Gaussians of `order` (flat ids, camera = id / n_per_cam) whose pixel
// rectangle overlaps it.
void psn_bin_count(const int64_t *order, int64_t n_order, const int32_t *rects, int64_t n_per_cam, int64_t block,
                   int64_t tiles_x, int64_t tiles_y, int64_t *count) {
    const int64_t per_cam = tiles_x * tiles_y;
    for (int64_t i = 0; i < n_order; ++i) {
        const int64_t gid = order[i];
        const int32_t *r = rects + 4 * gid;
        if (r[0] >= r[1] || r[2] >= r[3]) continue;
        const int64_t base = (gid / n_per_cam) * per_cam;
        const int64_t tx0 = r[0] / block, tx1 = (r[1] - 1) / block, ty0 = r[2] / block, ty1 = (r[3] - 1) / block;
        for (int64_t ty = ty0; ty <= ty1; ++ty)
            for (int64_t tx = tx0; tx <= tx1; ++tx) ++count[base + ty * tiles_x + tx];
    }
}

// Fill the tile lists in the order of `order` (front to back); `cursor` starts as the
// tiles' start offsets and is advanced.
void psn_bin_fill(const int64_t *order, int64_t n_order, const int32_t *rects, int64_t n_per_cam, int64_t block,
                  int64_t tiles_x, int64_t tiles_y, int64_t *cursor, int64_t *ids) {
    const int64_t per_cam = tiles_x * tiles_y;
    for (int64_t i = 0; i < n_order; ++i) {
        const int64_t gid = order[i];
        const int32_t *r = rects + 4 * gid;
        if (r[0] >= r[1] || r[2] >= r[3]) continue;
        const int64_t base = (gid / n_per_cam) * per_cam;
        const int64_t tx0 = r[0] / block, tx1 = (r[1] - 1) / block, ty0 = r[2] / block, ty1 = (r[3] - 1) / block;
        for (int64_t ty = ty0; ty <= ty1; ++ty)
            for (int64_t tx = tx0; tx <= tx1; ++tx) ids[cursor[base + ty * tiles_x + tx]++] = gid;
    }
}

#define PSN_GRID Grid{block, tiles_x, tiles_y, width, height, n_tiles}

void psn_forward_f32(const float *packed, int64_t D, const int64_t *ids, const int64_t *start, const int64_t *count,
                     const int32_t *rects, const float *cut, int64_t block, int64_t tiles_x, int64_t tiles_y,
                     int64_t width, int64_t height, int64_t n_tiles, float *T, float *acc, int32_t *used, int nt) {
    forward_dispatch<float>(packed, D, ids, start, count, rects, cut, PSN_GRID, T, acc, used, nt);
}

void psn_forward_f64(const double *packed, int64_t D, const int64_t *ids, const int64_t *start,
                     const int64_t *count, const int32_t *rects, const double *cut, int64_t block, int64_t tiles_x,
                     int64_t tiles_y, int64_t width, int64_t height, int64_t n_tiles, double *T, double *acc,
                     int32_t *used, int nt) {
    forward_dispatch<double>(packed, D, ids, start, count, rects, cut, PSN_GRID, T, acc, used, nt);
}

void psn_backward_f32(const float *packed, int64_t D, int64_t M, const int64_t *ids, const int64_t *start,
                      const int32_t *rects, const float *cut, int64_t block, int64_t tiles_x, int64_t tiles_y,
                      int64_t width, int64_t height, int64_t n_tiles, const int32_t *used, const float *vc,
                      const float *gt, float *grads, int nt) {
    backward_dispatch<float>(packed, D, M, ids, start, rects, cut, PSN_GRID, used, vc, gt, grads, nt);
}

void psn_backward_f64(const double *packed, int64_t D, int64_t M, const int64_t *ids, const int64_t *start,
                      const int32_t *rects, const double *cut, int64_t block, int64_t tiles_x, int64_t tiles_y,
                      int64_t width, int64_t height, int64_t n_tiles, const int32_t *used, const double *vc,
                      const double *gt, double *grads, int nt) {
    backward_dispatch<double>(packed, D, M, ids, start, rects, cut, PSN_GRID, used, vc, gt, grads, nt);
}

}  // extern "C"
