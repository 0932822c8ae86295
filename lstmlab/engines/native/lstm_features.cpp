// The bptt engine's feature-major time loop (lstmlab/engines/bptt_features.py) in C++ on ATen.
//
// Hand-written: the engine is this project's subject. The feature-major layout keeps step t
// as (features, B): seed 000's nodes in rows, samples in columns, the layout of the long
// time-lag nets (a few units, batches of thousands). The Python side (bptt_features) prepares
// every buffer as its own loop does (weights with alpha and the block input's argument scale
// folded in; ZA (T, D, B) = [g(z) | gate activations], C, h(C), Y (T, ., B)) and hands them
// here. The samples never meet inside the time loop (they meet only in the weight gradients,
// formed after it), so each thread takes a slice of columns and runs the whole time loop on it
// (at::parallel_for over columns, outside the loop): no synchronisation per step, where the
// Python loop's ten calls a step each fell below ATen's parallel grain. Per forward step of a
// slice of w columns: W x_t and R y_{t-1} (mLSTM: R (W_mx x_t * W_mh y_{t-1})), the full gate
// recurrence's Q q_{t-1}, into the step's (D, w) pre-activations (BLAS on raw pointers, leading
// dimension B), then one elementwise pass row by row, each row w contiguous samples (vectorised
// over the samples: the bias, the peepholes, the activations, the cell update, h(c), y_hat),
// and a projection's W_p y_hat. Per backward step: dy_hat = W_p^T dy, one fused pass forming
// the error responsibilities of every gate and of the block input from the saved activations
// and the carried errors (the equations of lstm_rows.cpp, there per sample, here per row of
// samples), dq = Q^T delta_gates, dy_{t-1} = R^T delta (+ the output error of step t-1).

#include <torch/library.h>

#include "rows_common.h"

namespace {

using namespace lstmlab_native;

// columns per task of at::parallel_for: each task runs the whole time loop on its columns
constexpr int64_t FM_GRAIN = 64;

// one forward step's elementwise work on w columns, every row with leading dimension ld (the
// batch): pre (D rows, the step's pre-activations without the bias), cp = c_{t-1}, c, hc =
// h(c), yh = y_hat (H rows each)
template <typename T>
__attribute__((always_inline)) inline void fm_forward_cells_impl(
    const Layout& L, int64_t w, int64_t ld, T* __restrict__ pre, const T* __restrict__ bias,
    const T* __restrict__ cp, T* __restrict__ c, T* __restrict__ hc, T* __restrict__ yh,
    const T* Pi, const T* Pf, const T* Po) {
  const int64_t H = L.H, cpb = L.cpb, nb = L.nb, D = L.D;
  const T gk = T(act_k(L.g_act)), g_off = -gk / T(2);
  const T hs = T(act_s(L.h_act)), hk = T(act_k(L.h_act)), h_off = -hk / T(2);
  const int64_t lo = L.sig_lo(), hi = L.sig_hi();
  for (int64_t d = 0; d < D; ++d) {
    T* __restrict__ a = pre + d * ld;
    const T bd = bias[d];
    // the input and forget gates see c_{t-1} through their peepholes
    const T* P = nullptr;
    int64_t j = -1;
    if (L.peep && L.has_i && d >= L.off_i && d < L.off_i + nb) P = Pi, j = d - L.off_i;
    if (L.peep && L.has_f && d >= L.off_f && d < L.off_f + nb) P = Pf, j = d - L.off_f;
    if (P != nullptr) {
      for (int64_t q = 0; q < cpb; ++q) {
        const T p = P[j * cpb + q];
        const T* __restrict__ cr = cp + (j * cpb + q) * ld;
        for (int64_t x = 0; x < w; ++x) a[x] += p * cr[x];
      }
    }
    if (d >= lo && d < hi) {  // the block input becomes k sigma(a) - k/2 (its scale is in W, R)
      const T k = d < H ? gk : T(1), off = d < H ? g_off : T(0);
      for (int64_t x = 0; x < w; ++x) a[x] = off + k / (T(1) + exp_poly(-(a[x] + bd)));
    } else {  // identity block input, or the output gate that still waits for c_t
      for (int64_t x = 0; x < w; ++x) a[x] += bd;
    }
  }
  const T* gi = L.has_i ? pre + L.off_i * ld : nullptr;
  const T* gf = L.has_f ? pre + L.off_f * ld : nullptr;
  for (int64_t d = 0; d < H; ++d) {
    const int64_t j = d / cpb;
    const T* __restrict__ z = pre + d * ld;
    const T* __restrict__ cpr = cp + d * ld;
    T* __restrict__ cr = c + d * ld;
    const T* __restrict__ i = gi != nullptr ? gi + j * ld : nullptr;
    const T* __restrict__ f = gf != nullptr ? gf + j * ld : nullptr;
    if (L.coupled) {
      for (int64_t x = 0; x < w; ++x) cr[x] = cpr[x] + i[x] * (z[x] - cpr[x]);
    } else if (f != nullptr && i != nullptr) {
      for (int64_t x = 0; x < w; ++x) cr[x] = f[x] * cpr[x] + i[x] * z[x];
    } else if (f != nullptr) {
      for (int64_t x = 0; x < w; ++x) cr[x] = f[x] * cpr[x] + z[x];
    } else if (i != nullptr) {
      for (int64_t x = 0; x < w; ++x) cr[x] = cpr[x] + i[x] * z[x];
    } else {
      for (int64_t x = 0; x < w; ++x) cr[x] = cpr[x] + z[x];
    }
    T* __restrict__ h = hc + d * ld;
    if (L.h_act == IDENTITY) {
      std::memcpy(h, cr, sizeof(T) * w);
    } else {
      for (int64_t x = 0; x < w; ++x) h[x] = h_off + hk / (T(1) + exp_poly(-(hs * cr[x])));
    }
  }
  if (L.has_o) {
    for (int64_t j = 0; j < nb; ++j) {
      T* __restrict__ o = pre + (L.off_o + j) * ld;
      if (L.peep) {  // the output gate sees c_t
        for (int64_t q = 0; q < cpb; ++q) {
          const T p = Po[j * cpb + q];
          const T* __restrict__ cr = c + (j * cpb + q) * ld;
          for (int64_t x = 0; x < w; ++x) o[x] += p * cr[x];
        }
        for (int64_t x = 0; x < w; ++x) o[x] = T(1) / (T(1) + exp_poly(-o[x]));
      }
      for (int64_t q = 0; q < cpb; ++q) {
        const T* __restrict__ h = hc + (j * cpb + q) * ld;
        T* __restrict__ y = yh + (j * cpb + q) * ld;
        for (int64_t x = 0; x < w; ++x) y[x] = o[x] * h[x];
      }
    }
  } else {
    for (int64_t d = 0; d < H; ++d) std::memcpy(yh + d * ld, hc + d * ld, sizeof(T) * w);
  }
}

// one backward step's fused pass on w columns: reads the step's activations za (D rows), c,
// hc and c_{t-1} (leading dimension ld), dyh (leading dimension ld) and the carried dc (dc_next,
// ld; updated in place to dc_{t-1}), dq (G rows, ld) and dC_t (or null); writes delta into dpre
// (D rows, row stride sr)
template <typename T>
__attribute__((always_inline)) inline void fm_backward_cells_impl(
    const Layout& L, int64_t w, int64_t ld, const T* za, const T* hc, const T* cp,
    const T* dyh, const T* dCt, T* dc, const T* dq, T* dpre, int64_t sr, const T* Pi,
    const T* Pf, const T* Po, T al_i, T al_f, T al_o) {
  const int64_t H = L.H, cpb = L.cpb, nb = L.nb;
  const T* gi = L.has_i ? za + L.off_i * ld : nullptr;
  const T* gf = L.has_f ? za + L.off_f * ld : nullptr;
  const T* go = L.has_o ? za + L.off_o * ld : nullptr;
  for (int64_t j = 0; j < nb; ++j) {
    const int64_t c0j = j * cpb;
    // output gate: delta_o, then dc = carried (+ dC_t) + dy_hat o h'(c) + P_o delta_o
    if (go != nullptr) {
      const T* __restrict__ o = go + j * ld;
      T* __restrict__ d_o = dpre + (L.off_o + j) * sr;
      for (int64_t x = 0; x < w; ++x) d_o[x] = T(0);
      for (int64_t q = 0; q < cpb; ++q) {
        const T* __restrict__ e = dyh + (c0j + q) * ld;
        const T* __restrict__ h = hc + (c0j + q) * ld;
        for (int64_t x = 0; x < w; ++x) d_o[x] += e[x] * h[x];
      }
      const T* __restrict__ dqo = dq != nullptr ? dq + (L.off_o - H + j) * ld : nullptr;
      if (dqo != nullptr) {
        for (int64_t x = 0; x < w; ++x) d_o[x] = (d_o[x] + dqo[x]) * (al_o * (o[x] - o[x] * o[x]));
      } else {
        for (int64_t x = 0; x < w; ++x) d_o[x] *= al_o * (o[x] - o[x] * o[x]);
      }
      for (int64_t q = 0; q < cpb; ++q) {
        const int64_t d = c0j + q;
        const T* __restrict__ e = dyh + d * ld;
        const T* __restrict__ h = hc + d * ld;
        T* __restrict__ v = dc + d * ld;
        const T* __restrict__ ext = dCt != nullptr ? dCt + d * ld : nullptr;
        const T po = L.peep ? Po[d] : T(0);
        for (int64_t x = 0; x < w; ++x)
          v[x] += (ext != nullptr ? ext[x] : T(0)) +
                  e[x] * times_derivative<T>(L.h_act, o[x], h[x]) + po * d_o[x];
      }
    } else {
      for (int64_t q = 0; q < cpb; ++q) {
        const int64_t d = c0j + q;
        const T* __restrict__ e = dyh + d * ld;
        const T* __restrict__ h = hc + d * ld;
        T* __restrict__ v = dc + d * ld;
        const T* __restrict__ ext = dCt != nullptr ? dCt + d * ld : nullptr;
        for (int64_t x = 0; x < w; ++x)
          v[x] += (ext != nullptr ? ext[x] : T(0)) +
                  e[x] * times_derivative<T>(L.h_act, T(1), h[x]);
      }
    }
    // input and forget gates: sums over the block's cells
    T* d_i = gi != nullptr ? dpre + (L.off_i + j) * sr : nullptr;
    T* d_f = gf != nullptr ? dpre + (L.off_f + j) * sr : nullptr;
    for (const auto& [g, dg, al, off] :
         {std::tuple<const T*, T*, T, int64_t>{gi, d_i, al_i, L.off_i}, {gf, d_f, al_f, L.off_f}}) {
      if (g == nullptr) continue;
      const T* __restrict__ a = g + j * ld;
      T* __restrict__ out = dg;
      for (int64_t x = 0; x < w; ++x) out[x] = T(0);
      for (int64_t q = 0; q < cpb; ++q) {
        const int64_t d = c0j + q;
        const T* __restrict__ v = dc + d * ld;
        const T* __restrict__ cpr = cp + d * ld;
        if (g == gf) {  // K_f = c_{t-1}
          for (int64_t x = 0; x < w; ++x) out[x] += v[x] * cpr[x];
        } else {  // K_i = z (CIFG: z - c_{t-1})
          const T* __restrict__ z = za + d * ld;
          if (L.coupled) {
            for (int64_t x = 0; x < w; ++x) out[x] += v[x] * (z[x] - cpr[x]);
          } else {
            for (int64_t x = 0; x < w; ++x) out[x] += v[x] * z[x];
          }
        }
      }
      const T* __restrict__ dqg = dq != nullptr ? dq + (off - H + j) * ld : nullptr;
      if (dqg != nullptr) {
        for (int64_t x = 0; x < w; ++x) out[x] = (out[x] + dqg[x]) * (al * (a[x] - a[x] * a[x]));
      } else {
        for (int64_t x = 0; x < w; ++x) out[x] *= al * (a[x] - a[x] * a[x]);
      }
    }
    // block input, and the error carried to c_{t-1}
    const T* __restrict__ i = gi != nullptr ? gi + j * ld : nullptr;
    const T* __restrict__ f = gf != nullptr ? gf + j * ld : nullptr;
    for (int64_t q = 0; q < cpb; ++q) {
      const int64_t d = c0j + q;
      const T* __restrict__ z = za + d * ld;
      T* __restrict__ v = dc + d * ld;
      T* __restrict__ dz = dpre + d * sr;
      const T pi = L.peep && d_i != nullptr ? Pi[d] : T(0);
      const T pf = L.peep && d_f != nullptr ? Pf[d] : T(0);
      for (int64_t x = 0; x < w; ++x) {
        const T iw = i != nullptr ? i[x] : T(1);
        const T F = L.coupled ? T(1) - i[x] : (f != nullptr ? f[x] : T(1));
        dz[x] = v[x] * times_derivative<T>(L.g_act, iw, z[x]);
        T carried = v[x] * F;
        if (d_i != nullptr) carried += pi * d_i[x];
        if (d_f != nullptr) carried += pf * d_f[x];
        v[x] = carried;
      }
    }
  }
}

// each compiled for AVX-512, AVX2 and the baseline, picked at load time (rows_common.h)
#define LSTMLAB_FM_KERNELS(T)                                                                   \
  LSTMLAB_CLONES void fm_forward_cells(const Layout& L, int64_t w, int64_t ld, T* pre,          \
                                       const T* bias, const T* cp, T* c, T* hc, T* yh,          \
                                       const T* Pi, const T* Pf, const T* Po) {                 \
    fm_forward_cells_impl<T>(L, w, ld, pre, bias, cp, c, hc, yh, Pi, Pf, Po);                   \
  }                                                                                             \
  LSTMLAB_CLONES void fm_backward_cells(const Layout& L, int64_t w, int64_t ld, const T* za,    \
                                        const T* hc, const T* cp, const T* dyh, const T* dCt,   \
                                        T* dc, const T* dq, T* dpre, int64_t sr, const T* Pi,   \
                                        const T* Pf, const T* Po, T al_i, T al_f, T al_o) {     \
    fm_backward_cells_impl<T>(L, w, ld, za, hc, cp, dyh, dCt, dc, dq, dpre, sr, Pi, Pf, Po,     \
                              al_i, al_f, al_o);                                                \
  }
LSTMLAB_FM_KERNELS(float)
LSTMLAB_FM_KERNELS(double)
#undef LSTMLAB_FM_KERNELS

void check_steps(const at::Tensor& t, int64_t T, int64_t rows, int64_t B, const char* what) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == T && t.size(1) == rows && t.size(2) == B,
              "lstmlab native core (feature-major): ", what, " must be (", T, ", ", rows, ", ",
              B, "), got ", t.sizes());
}

// the steps side by side: (T, K, B) with strides (B, T*B, 1), or contiguous (K*B, B, 1)
void check_side(const at::Tensor& t, int64_t T, int64_t rows, int64_t B, const char* what) {
  check_steps(t, T, rows, B, what);
  TORCH_CHECK(t.stride(2) == 1, "lstmlab native core (feature-major): ", what,
              " must have unit column stride");
}

// n_t for each of the T steps: at most B, never rising (a batch sorted by length)
void check_batch_sizes(at::IntArrayRef batch_sizes, int64_t T, int64_t B) {
  TORCH_CHECK(int64_t(batch_sizes.size()) == T, "lstmlab native core (feature-major): ",
              batch_sizes.size(), " batch sizes for ", T, " steps");
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(batch_sizes[t] >= 0 && batch_sizes[t] <= B &&
                    (t == 0 || batch_sizes[t] <= batch_sizes[t - 1]),
                "lstmlab native core (feature-major): batch sizes must fall from at most B");
}

void forward_features(const at::Tensor& x_, const at::Tensor& Ws_, const at::Tensor& bias_,
                      const at::Tensor& Rs_, const at::Tensor& h0T, const at::Tensor& c0T,
                      at::Tensor ZA, at::Tensor C, at::Tensor HC, at::Tensor Y,
                      const c10::optional<at::Tensor>& Yh, const c10::optional<at::Tensor>& Wp,
                      const c10::optional<at::Tensor>& Qs, const c10::optional<at::Tensor>& Pi,
                      const c10::optional<at::Tensor>& Pf, const c10::optional<at::Tensor>& Po,
                      at::IntArrayRef batch_sizes, at::IntArrayRef cfg,
                      const c10::optional<at::Tensor>& MX, const c10::optional<at::Tensor>& U,
                      const c10::optional<at::Tensor>& Mm, const c10::optional<at::Tensor>& Wmh) {
  const Layout L(cfg);
  L.engine_order();
  TORCH_CHECK(L.zs == 1, "lstmlab native core (feature-major): the weights must carry the "
              "block input's scale");
  TORCH_CHECK(x_.dim() == 3, "lstmlab native core (feature-major): x must be (T, B, I)");
  const int64_t T = x_.size(0), B = x_.size(1), I = x_.size(2), D = L.D, H = L.H, G = L.G;
  const int64_t Hr = Y.size(1);
  const bool mult = given(Wmh);
  const int64_t M = mult ? Wmh->size(0) : 0;
  const int64_t Kr = mult ? M : Hr;  // what the recurrent product multiplies: y_{t-1} or m_t
  const bool proj = given(Wp), fgr = given(Qs);
  // ZA, h(C) and y_hat hold every step, or (no backward to come) a ring: ZA one step (two
  // with a full gate recurrence, which reads the previous step's gates), h(C) and y_hat one
  const int64_t rz = ZA.size(0), rh = HC.size(0);
  TORCH_CHECK(rz == T || (rz == (fgr ? 2 : 1) && T >= rz) || (rz == 1 && T == 1),
              "lstmlab native core (feature-major): ZA holds ", rz, " steps of ", T);
  TORCH_CHECK(rh == T || rh == 1, "lstmlab native core (feature-major): h(C) holds ", rh,
              " steps of ", T);
  check_steps(ZA, rz, D, B, "ZA");
  check_steps(C, T, H, B, "C");
  check_steps(HC, rh, H, B, "h(C)");
  check_steps(Y, T, Hr, B, "Y");
  TORCH_CHECK(Ws_.dim() == 2 && Ws_.size(0) == D && Ws_.size(1) == I,
              "lstmlab native core (feature-major): W must be (", D, ", ", I, ")");
  TORCH_CHECK(Rs_.dim() == 2 && Rs_.size(0) == D && Rs_.size(1) == Kr,
              "lstmlab native core (feature-major): R must be (", D, ", ", Kr, ")");
  TORCH_CHECK(bias_.numel() == D, "lstmlab native core (feature-major): bias of ", bias_.numel(),
              ", expected ", D);
  TORCH_CHECK(h0T.dim() == 2 && h0T.size(0) == Hr && h0T.size(1) == B && c0T.dim() == 2 &&
                  c0T.size(0) == H && c0T.size(1) == B,
              "lstmlab native core (feature-major): h0 and c0 must be (Hr, B) and (H, B)");
  TORCH_CHECK(!proj || (Wp->dim() == 2 && Wp->size(0) == Hr && Wp->size(1) == H),
              "lstmlab native core (feature-major): W_p must be (Hr, H)");
  TORCH_CHECK(proj == (given(Yh) && Yh->size(1) == H), "lstmlab native core: y_hat and W_p");
  const int64_t ry = proj ? Yh->size(0) : T;
  TORCH_CHECK(ry == T || ry == 1, "lstmlab native core (feature-major): y_hat steps");
  if (proj) check_steps(*Yh, ry, H, B, "y_hat");
  TORCH_CHECK(proj || Hr == H, "lstmlab native core (feature-major): Y must have H rows");
  TORCH_CHECK(!fgr || (Qs->dim() == 2 && Qs->size(0) == G && Qs->size(1) == G),
              "lstmlab native core (feature-major): Q must be (G, G)");
  TORCH_CHECK(!mult || (Wmh->dim() == 2 && Wmh->size(1) == Hr && given(MX) && given(U) &&
                        given(Mm)),
              "lstmlab native core (feature-major): mLSTM's W_mh (M, Hr) and buffers");
  if (mult) {
    check_steps(*MX, T, M, B, "W_mx x");
    check_steps(*U, T, M, B, "u");
    check_steps(*Mm, T, M, B, "m");
  }
  check_batch_sizes(batch_sizes, T, B);
  std::vector<at::Tensor> bufs{ZA, C, HC, Y};
  if (proj) bufs.push_back(*Yh);
  if (mult) bufs.insert(bufs.end(), {*MX, *U, *Mm});
  for (const at::Tensor& t : bufs)
    TORCH_CHECK(t.is_contiguous(), "lstmlab native core (feature-major): the step buffers must "
                                   "be contiguous");
  const at::Tensor x = x_.contiguous(), Ws = Ws_.contiguous(), Rs = Rs_.contiguous();
  const at::Tensor bias = bias_.contiguous(), h0 = h0T.contiguous(), c0 = c0T.contiguous();
  const at::Tensor Wpc = proj ? Wp->contiguous() : at::Tensor();
  const at::Tensor Qc = fgr ? Qs->contiguous() : at::Tensor();
  const at::Tensor Wmhc = mult ? Wmh->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(ZA.scalar_type(), "lstmlab_forward_features", [&] {
    using S = scalar_t;
    const S* Pi_ = opt_ptr<S>(Pi);
    const S* Pf_ = opt_ptr<S>(Pf);
    const S* Po_ = opt_ptr<S>(Po);
    const S* x0 = x.data_ptr<S>();
    const S* W_ = Ws.data_ptr<S>();
    const S* R_ = Rs.data_ptr<S>();
    const S* b_ = bias.data_ptr<S>();
    const S* Wp_ = proj ? Wpc.data_ptr<S>() : nullptr;
    const S* Q_ = fgr ? Qc.data_ptr<S>() : nullptr;
    const S* Wmh_ = mult ? Wmhc.data_ptr<S>() : nullptr;
    S* za = ZA.data_ptr<S>();
    S* c = C.data_ptr<S>();
    S* hc = HC.data_ptr<S>();
    S* y = Y.data_ptr<S>();
    S* yh = proj ? Yh->data_ptr<S>() : y;
    const S* mx = mult ? MX->data_ptr<S>() : nullptr;
    S* u = mult ? U->data_ptr<S>() : nullptr;
    S* mm = mult ? Mm->data_ptr<S>() : nullptr;
    at::parallel_for(0, B, FM_GRAIN, [&](int64_t b0, int64_t b1) {
      const S* y_prev = h0.data_ptr<S>() + b0;
      const S* c_prev = c0.data_ptr<S>() + b0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t w = std::min(b1, batch_sizes[t]) - b0;  // this task's columns alive
        if (w <= 0) break;
        S* pre = za + (t % rz) * D * B + b0;
        // W x_t: x_t's rows (w, I) enter as a transposed operand
        gemm_rows<S>(D, w, I, W_, I, x0 + (t * B + b0) * I, I, S(0), pre, B, true);
        if (mult) {  // u = W_mh y_{t-1}, m = (W_mx x_t) * u, + R m
          S* u_t = u + t * M * B + b0;
          S* m_t = mm + t * M * B + b0;
          const S* mx_t = mx + t * M * B + b0;
          gemm_rows<S>(M, w, Hr, Wmh_, Hr, y_prev, B, S(0), u_t, B);
          for (int64_t r = 0; r < M; ++r)
            for (int64_t e = 0; e < w; ++e) m_t[r * B + e] = mx_t[r * B + e] * u_t[r * B + e];
          gemm_rows<S>(D, w, M, R_, M, m_t, B, S(1), pre, B);
        } else {
          gemm_rows<S>(D, w, Hr, R_, Hr, y_prev, B, S(1), pre, B);
        }
        if (fgr && t > 0)  // full gate recurrence: + Q q_{t-1} on the gate rows
          gemm_rows<S>(G, w, G, Q_, G, za + ((t - 1) % rz) * D * B + H * B + b0, B, S(1),
                       pre + H * B, B);
        S* c_t = c + t * H * B + b0;
        S* yh_t = yh + (t % (proj ? ry : T)) * H * B + b0;
        fm_forward_cells(L, w, B, pre, b_, c_prev, c_t, hc + (t % rh) * H * B + b0, yh_t, Pi_,
                         Pf_, Po_);
        S* y_t = y + t * Hr * B + b0;
        if (proj) gemm_rows<S>(Hr, w, H, Wp_, H, yh_t, B, S(0), y_t, B);
        y_prev = y_t;
        c_prev = c_t;
      }
    });
  });
}

void backward_features(const at::Tensor& ZA, const at::Tensor& C, const at::Tensor& HC,
                       const at::Tensor& c0T, const at::Tensor& R_,
                       const c10::optional<at::Tensor>& Wp, const c10::optional<at::Tensor>& Q,
                       const c10::optional<at::Tensor>& Pi, const c10::optional<at::Tensor>& Pf,
                       const c10::optional<at::Tensor>& Po, const c10::optional<at::Tensor>& dYT,
                       const c10::optional<at::Tensor>& dCT, at::Tensor dPre,
                       const c10::optional<at::Tensor>& DY, at::Tensor dy_next,
                       at::Tensor dc_next, const c10::optional<at::Tensor>& dq_next,
                       at::IntArrayRef batch_sizes, at::IntArrayRef cfg,
                       at::ArrayRef<double> alpha, const c10::optional<at::Tensor>& MX,
                       const c10::optional<at::Tensor>& U, const c10::optional<at::Tensor>& Wmh,
                       const c10::optional<at::Tensor>& dU, const c10::optional<at::Tensor>& dMX) {
  const Layout L(cfg);
  L.engine_order();
  const int64_t T = ZA.size(0), B = ZA.size(2), D = L.D, H = L.H, G = L.G;
  const int64_t Hr = dy_next.size(0);
  const bool mult = given(Wmh);
  const int64_t M = mult ? Wmh->size(0) : 0;
  const int64_t Kr = mult ? M : Hr;
  const bool proj = given(Wp), fgr = given(Q);
  check_steps(ZA, T, D, B, "ZA");
  check_steps(C, T, H, B, "C");
  check_steps(HC, T, H, B, "h(C)");
  check_side(dPre, T, D, B, "dPre");
  TORCH_CHECK(R_.dim() == 2 && R_.size(0) == D && R_.size(1) == Kr,
              "lstmlab native core (feature-major): R must be (", D, ", ", Kr, ")");
  TORCH_CHECK(c0T.dim() == 2 && c0T.size(0) == H && c0T.size(1) == B,
              "lstmlab native core (feature-major): c0 must be (H, B)");
  TORCH_CHECK(dy_next.dim() == 2 && dy_next.size(1) == B && dy_next.is_contiguous() &&
                  dc_next.dim() == 2 && dc_next.size(0) == H && dc_next.size(1) == B &&
                  dc_next.is_contiguous(),
              "lstmlab native core (feature-major): dy_next (Hr, B) and dc_next (H, B), "
              "contiguous");
  TORCH_CHECK(!proj || (Wp->dim() == 2 && Wp->size(0) == Hr && Wp->size(1) == H && given(DY)),
              "lstmlab native core (feature-major): W_p must be (Hr, H), with DY");
  TORCH_CHECK(proj || Hr == H, "lstmlab native core (feature-major): dy_next must have H rows");
  if (proj) check_side(*DY, T, Hr, B, "DY");
  TORCH_CHECK(!fgr || (Q->dim() == 2 && Q->size(0) == G && Q->size(1) == G && given(dq_next) &&
                       dq_next->is_contiguous() && dq_next->size(0) == G &&
                       dq_next->size(1) == B),
              "lstmlab native core (feature-major): Q (G, G) and dq_next (G, B)");
  TORCH_CHECK(!mult || (Wmh->dim() == 2 && Wmh->size(1) == Hr && given(MX) && given(U) &&
                        given(dU) && given(dMX)),
              "lstmlab native core (feature-major): mLSTM's W_mh (M, Hr) and buffers");
  if (mult) {
    check_steps(*MX, T, M, B, "W_mx x");
    check_steps(*U, T, M, B, "u");
    check_side(*dU, T, M, B, "du");
    check_side(*dMX, T, M, B, "d(W_mx x)");
    TORCH_CHECK(MX->is_contiguous() && U->is_contiguous(),
                "lstmlab native core (feature-major): mLSTM buffers must be contiguous");
  }
  TORCH_CHECK(alpha.size() == 3, "lstmlab native core: alpha must be (i, f, o)");
  check_batch_sizes(batch_sizes, T, B);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&ZA, &C, &HC})
    TORCH_CHECK(t->is_contiguous(), "lstmlab native core (feature-major): the step buffers "
                                    "must be contiguous");
  if (given(dYT)) check_steps(*dYT, T, Hr, B, "dY (transposed)");
  if (given(dCT)) check_steps(*dCT, T, H, B, "dC (transposed)");
  // the incoming gradients may be any strided tensors: read contiguous copies
  const at::Tensor dYc = given(dYT) ? dYT->contiguous() : at::Tensor();
  const at::Tensor dCc = given(dCT) ? dCT->contiguous() : at::Tensor();
  const at::Tensor c0 = c0T.contiguous(), R = R_.contiguous();
  const at::Tensor Wpc = proj ? Wp->contiguous() : at::Tensor();
  const at::Tensor Qc = fgr ? Q->contiguous() : at::Tensor();
  const at::Tensor Wmhc = mult ? Wmh->contiguous() : at::Tensor();
  at::Tensor dyh_buf = proj ? at::empty({H, B}, dy_next.options()) : at::Tensor();
  at::Tensor dm_buf = mult ? at::empty({M, B}, dy_next.options()) : at::Tensor();
  const int64_t sP = dPre.stride(0), rP = dPre.stride(1);  // step and row strides of dPre
  AT_DISPATCH_FLOATING_TYPES(ZA.scalar_type(), "lstmlab_backward_features", [&] {
    using S = scalar_t;
    const S* Pi_ = opt_ptr<S>(Pi);
    const S* Pf_ = opt_ptr<S>(Pf);
    const S* Po_ = opt_ptr<S>(Po);
    const S* za = ZA.data_ptr<S>();
    const S* c = C.data_ptr<S>();
    const S* hc = HC.data_ptr<S>();
    const S* R0 = R.data_ptr<S>();
    const S* Wp_ = proj ? Wpc.data_ptr<S>() : nullptr;
    const S* Q_ = fgr ? Qc.data_ptr<S>() : nullptr;
    const S* Wmh_ = mult ? Wmhc.data_ptr<S>() : nullptr;
    const S* dY_ = dYc.defined() ? dYc.data_ptr<S>() : nullptr;
    const S* dC_ = dCc.defined() ? dCc.data_ptr<S>() : nullptr;
    S* dpre0 = dPre.data_ptr<S>();
    S* DY_ = proj ? DY->data_ptr<S>() : nullptr;
    const int64_t sD = proj ? DY->stride(0) : 0, rD = proj ? DY->stride(1) : 0;
    S* dy = dy_next.data_ptr<S>();
    S* dc = dc_next.data_ptr<S>();
    S* dq = fgr ? dq_next->data_ptr<S>() : nullptr;
    S* dyh0 = proj ? dyh_buf.data_ptr<S>() : dy;
    const S* mx = mult ? MX->data_ptr<S>() : nullptr;
    const S* u = mult ? U->data_ptr<S>() : nullptr;
    S* du = mult ? dU->data_ptr<S>() : nullptr;
    S* dmx = mult ? dMX->data_ptr<S>() : nullptr;
    const int64_t sU = mult ? dU->stride(0) : 0, rU = mult ? dU->stride(1) : 0;
    const int64_t sX = mult ? dMX->stride(0) : 0, rX = mult ? dMX->stride(1) : 0;
    S* dm0 = mult ? dm_buf.data_ptr<S>() : nullptr;
    const S al_i = S(alpha[0]), al_f = S(alpha[1]), al_o = S(alpha[2]);
    at::parallel_for(0, B, FM_GRAIN, [&](int64_t b0, int64_t b1) {
      S* dy_c = dy + b0;
      S* dc_c = dc + b0;
      S* dyh = dyh0 + b0;
      S* dq_c = fgr ? dq + b0 : nullptr;
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t n = batch_sizes[t];
        const int64_t w = std::min(b1, n) - b0;  // this task's columns alive
        if (w <= 0) continue;
        // columns whose last step is t: their output error (the others had it folded into
        // the recurrent product of step t + 1)
        const int64_t n_after = t + 1 < T ? batch_sizes[t + 1] : 0;
        if (dY_ != nullptr && std::min(b1, n) > std::max(b0, n_after)) {
          const int64_t e0 = std::max(b0, n_after), e1 = std::min(b1, n);
          for (int64_t r = 0; r < Hr; ++r) {
            const S* src = dY_ + (t * Hr + r) * B;
            S* dst = dy + r * B;
            for (int64_t e = e0; e < e1; ++e) dst[e] += src[e];
          }
        }
        S* dpre = dpre0 + t * sP + b0;
        if (proj) {  // dy_hat = W_p^T dy
          for (int64_t r = 0; r < Hr; ++r)
            std::memcpy(DY_ + t * sD + r * rD + b0, dy_c + r * B, sizeof(S) * w);
          gemm_rows<S>(H, w, Hr, Wp_, H, dy_c, B, S(0), dyh, B, false, true);
        }
        const S* cp = (t > 0 ? c + (t - 1) * H * B : c0.data_ptr<S>()) + b0;
        fm_backward_cells(L, w, B, za + t * D * B + b0, hc + t * H * B + b0, cp, dyh,
                          dC_ != nullptr ? dC_ + t * H * B + b0 : nullptr, dc_c, dq_c, dpre, rP,
                          Pi_, Pf_, Po_, al_i, al_f, al_o);
        // (the activation rows are read with the batch as their leading dimension)
        if (fgr)  // dq = Q^T delta_gates
          gemm_rows<S>(G, w, G, Q_, G, dpre + H * rP, rP, S(0), dq_c, B, false, true);
        // dy_{t-1} = R^T delta (mLSTM: W_mh^T du) + the output error of step t-1
        const bool add_out = dY_ != nullptr && t > 0;
        if (add_out)
          for (int64_t r = 0; r < Hr; ++r)
            std::memcpy(dy_c + r * B, dY_ + ((t - 1) * Hr + r) * B + b0, sizeof(S) * w);
        if (mult) {
          S* dm = dm0 + b0;
          gemm_rows<S>(M, w, D, R0, M, dpre, rP, S(0), dm, B, false, true);
          S* du_t = du + t * sU + b0;
          S* dmx_t = dmx + t * sX + b0;
          const S* mx_t = mx + t * M * B + b0;
          const S* u_t = u + t * M * B + b0;
          for (int64_t r = 0; r < M; ++r)
            for (int64_t e = 0; e < w; ++e) {
              du_t[r * rU + e] = dm[r * B + e] * mx_t[r * B + e];
              dmx_t[r * rX + e] = dm[r * B + e] * u_t[r * B + e];
            }
          gemm_rows<S>(Hr, w, M, Wmh_, Hr, du_t, rU, add_out ? S(1) : S(0), dy_c, B, false,
                       true);
        } else {
          gemm_rows<S>(Hr, w, D, R0, Hr, dpre, rP, add_out ? S(1) : S(0), dy_c, B, false, true);
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstmlab_native, m) {
  m.def(
      "forward_features(Tensor x, Tensor Ws, Tensor bias, Tensor Rs, Tensor h0T, Tensor c0T, "
      "Tensor(a!) ZA, Tensor(b!) C, Tensor(c!) HC, Tensor(d!) Y, Tensor(e!)? Yh, Tensor? Wp, "
      "Tensor? Qs, Tensor? Pi, Tensor? Pf, Tensor? Po, int[] batch_sizes, int[] cfg, "
      "Tensor? MX=None, Tensor(f!)? U=None, Tensor(g!)? Mm=None, Tensor? Wmh=None) -> ()");
  m.def(
      "backward_features(Tensor ZA, Tensor C, Tensor HC, Tensor c0T, Tensor R, Tensor? Wp, "
      "Tensor? Q, Tensor? Pi, Tensor? Pf, Tensor? Po, Tensor? dYT, Tensor? dCT, "
      "Tensor(a!) dPre, Tensor(b!)? DY, Tensor(c!) dy_next, Tensor(d!) dc_next, "
      "Tensor(e!)? dq_next, int[] batch_sizes, int[] cfg, float[] alpha, Tensor? MX=None, "
      "Tensor? U=None, Tensor? Wmh=None, Tensor(f!)? dU=None, Tensor(g!)? dMX=None) -> ()");
}

TORCH_LIBRARY_IMPL(lstmlab_native, CPU, m) {
  m.impl("forward_features", &forward_features);
  m.impl("backward_features", &backward_features);
}
