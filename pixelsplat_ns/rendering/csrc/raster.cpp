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

template <typename S>
struct ProjectArgs {
    const S *means, *quats, *scales, *opac, *sh, *viewmats, *Ks, *campos;
    int64_t sh_cam_stride, K;
    int sh_degree;
    int64_t C, N, width, height;
    double eps2d, near_plane, far_plane, radius_clip;
};

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
void project_forward(const ProjectArgs<S> &a, int32_t *radii, S *means2d, S *depths, S *conics, S *colors,
                     int32_t *rects, S *sigma_cut, int n_threads) {
    std::vector<CamConst<S>> cams;
    for (int64_t c = 0; c < a.C; ++c) cams.push_back(camera_constants(a, c));
    const int64_t gs_tx = (a.width + 15) / 16, gs_ty = (a.height + 15) / 16;
    const int64_t block = 2048, n_blocks = (a.N + block - 1) / block;
    const int n_bases = a.sh_degree >= 0 ? (a.sh_degree + 1) * (a.sh_degree + 1) : 0;
    parallel_for(n_blocks, n_threads, [&](int, int64_t b) {
        S basis[25];
        for (int64_t n = b * block; n < std::min(a.N, (b + 1) * block); ++n) {
            S R[9], M[9], qn[4], qnorm;
            rotation_scale(a.quats + 4 * n, a.scales + 3 * n, R, M, qn, qnorm);
            const S *mean = a.means + 3 * n;
            for (int64_t c = 0; c < a.C; ++c) {
                const int64_t i = c * a.N + n;
                const CamConst<S> &k = cams[c];
                ProjState<S> st;
                project_one(k, mean, M, a, st);
                depths[i] = st.p[2];
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
                    if (colors) colors[3 * i] = colors[3 * i + 1] = colors[3 * i + 2] = S(0);
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
                    const S *coef = a.sh + c * a.sh_cam_stride + n * a.K * 3;
                    for (int ch = 0; ch < 3; ++ch) {
                        S v = 0;
                        for (int kb = 0; kb < n_bases; ++kb) v += basis[kb] * coef[3 * kb + ch];
                        colors[3 * i + ch] = std::max(v + S(0.5), S(0));
                    }
                }
                // Footprint: gsplat's 16-pixel tile rectangle cut to the alpha >= 1/255 box.
                const S o = a.opac[n];
                if (!(o >= S(1.0 / 255.0))) continue;
                const S tr = S(radii[i]) / S(16), tx = mx / S(16), ty = my / S(16);
                const int64_t x0 = std::min<int64_t>(std::max<int64_t>((int64_t)std::floor(tx - tr), 0), gs_tx);
                const int64_t x1 = std::min<int64_t>(std::max<int64_t>((int64_t)std::ceil(tx + tr), 0), gs_tx);
                const int64_t y0 = std::min<int64_t>(std::max<int64_t>((int64_t)std::floor(ty - tr), 0), gs_ty);
                const int64_t y1 = std::min<int64_t>(std::max<int64_t>((int64_t)std::ceil(ty + tr), 0), gs_ty);
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
void project_backward(const ProjectArgs<S> &a, const int32_t *radii, const S *v_means2d, const S *v_depths,
                      const S *v_conics, const S *v_colors, S *v_means, S *v_quats, S *v_scales, S *v_sh,
                      int n_threads) {
    std::vector<CamConst<S>> cams;
    for (int64_t c = 0; c < a.C; ++c) cams.push_back(camera_constants(a, c));
    const int64_t block = 2048, n_blocks = (a.N + block - 1) / block;
    const int n_bases = a.sh_degree >= 0 ? (a.sh_degree + 1) * (a.sh_degree + 1) : 0;
    parallel_for(n_blocks, n_threads, [&](int, int64_t b) {
        Dual3<S> dbasis[25];
        S basis[25];
        for (int64_t n = b * block; n < std::min(a.N, (b + 1) * block); ++n) {
            S R[9], M[9], qn[4], qnorm;
            rotation_scale(a.quats + 4 * n, a.scales + 3 * n, R, M, qn, qnorm);
            const S *mean = a.means + 3 * n;
            const S *s = a.scales + 3 * n;
            S g_mean[3] = {0, 0, 0}, g_M[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t c = 0; c < a.C; ++c) {
                const int64_t i = c * a.N + n;
                // depth is always an output (it feeds the expected-depth channel)
                S g_p[3] = {0, 0, v_depths[i]};
                if (radii[i] > 0) {
                    const CamConst<S> &k = cams[c];
                    ProjState<S> st;
                    project_one(k, mean, M, a, st);
                    // conic = inverse of the dilated covariance: dL/dSigma = -Q V Q
                    const S inv = S(1) / st.det;
                    const S qa = st.cyy * inv, qb = -st.cxy * inv, qc = st.cxx * inv;
                    const S va = v_conics[3 * i], vb = S(0.5) * v_conics[3 * i + 1], vc = v_conics[3 * i + 2];
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
                    const S vmx = v_means2d[2 * i], vmy = v_means2d[2 * i + 1];
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
                        const S *coef = a.sh + c * a.sh_cam_stride + n * a.K * 3;
                        S *g_coef = v_sh + c * a.sh_cam_stride + n * a.K * 3;
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
                            g_raw[ch] = (v + S(0.5) >= S(0)) ? v_colors[3 * i + ch] : S(0);
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
}  // namespace

extern "C" {

int psn_abi_version() { return 3; }

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

#define PSN_PROJECT_ARGS(S)                                                                                        \
    const S *means, const S *quats, const S *scales, const S *opac, const S *sh, int64_t sh_cam_stride, int64_t K, \
        int sh_degree, const S *viewmats, const S *Ks, const S *campos, int64_t C, int64_t N, int64_t width,      \
        int64_t height, double eps2d, double near_plane, double far_plane, double radius_clip
#define PSN_PROJECT_PACK(S)                                                                                        \
    ProjectArgs<S>{means, quats, scales, opac, sh, viewmats, Ks, campos, sh_cam_stride, K, sh_degree, C, N, width, \
                   height, eps2d, near_plane, far_plane, radius_clip}

void psn_project_fwd_f32(PSN_PROJECT_ARGS(float), int32_t *radii, float *means2d, float *depths, float *conics,
                         float *colors, int32_t *rects, float *sigma_cut, int nt) {
    project_forward<float>(PSN_PROJECT_PACK(float), radii, means2d, depths, conics, colors, rects, sigma_cut, nt);
}
void psn_project_fwd_f64(PSN_PROJECT_ARGS(double), int32_t *radii, double *means2d, double *depths, double *conics,
                         double *colors, int32_t *rects, double *sigma_cut, int nt) {
    project_forward<double>(PSN_PROJECT_PACK(double), radii, means2d, depths, conics, colors, rects, sigma_cut, nt);
}
void psn_project_bwd_f32(PSN_PROJECT_ARGS(float), const int32_t *radii, const float *v_means2d, const float *v_depths,
                         const float *v_conics, const float *v_colors, float *v_means, float *v_quats, float *v_scales,
                         float *v_sh, int nt) {
    project_backward<float>(PSN_PROJECT_PACK(float), radii, v_means2d, v_depths, v_conics, v_colors, v_means, v_quats,
                            v_scales, v_sh, nt);
}
void psn_project_bwd_f64(PSN_PROJECT_ARGS(double), const int32_t *radii, const double *v_means2d,
                         const double *v_depths, const double *v_conics, const double *v_colors, double *v_means,
                         double *v_quats, double *v_scales, double *v_sh, int nt) {
    project_backward<double>(PSN_PROJECT_PACK(double), radii, v_means2d, v_depths, v_conics, v_colors, v_means,
                             v_quats, v_scales, v_sh, nt);
}

}  // extern "C"
