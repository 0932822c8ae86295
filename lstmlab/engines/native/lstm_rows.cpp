// The bptt engine's batch-major time loop (lstmlab/engines/bptt_rows.py) in C++ on ATen.
//
// Hand-written: the engine is this project's subject. The Python side (bptt_rows) prepares
// every buffer exactly as its own loop does (weights with alpha and the block input's argument
// scale folded in, the (T, B, D) activation tensor ZA = [g(z) | gate activations], C, h(C), Y)
// and hands them here; this file runs the steps. Per forward step: the input projection W x_t
// one large product per chunk of steps (the bias is added in the step's elementwise pass), one
// recurrent product R y_{t-1} added into the step's rows of ZA (BLAS on raw pointers, the
// weights read in place through a transposed operand; float32 on a weight packed once per
// call; at batch 1 row_gemv), the full gate recurrence's Q q_{t-1} and a projection's
// W_p y_hat where a variant has them, and the elementwise work over the rows alive
// (at::parallel_for): the common cell's two vectorised passes (common_step), or one general
// pass for peepholes, blocks of cells, every gate set and activation. mLSTM, F-LSTM and G-LSTM
// put an intermediate in y_{t-1}'s place (see forward_rows). Per backward step: dy_hat = dy W_p
// (projection), one fused pass forming the error responsibilities of every gate and of the
// block input from the saved activations and the carried errors, dq = delta_gates Q (full
// gate recurrence), and one product dy_{t-1} = delta R (+ the output error of step t-1, folded
// in). The weight gradients stay single large products after the loop, in Python.
//
// Equations (rows = samples; a gate's value broadcast over the cpb cells of its block; alpha
// folded into the forward weights, raw weights and alpha explicit in the backward):
//   forward   a_i += P_i c_{t-1}, a_f += P_f c_{t-1}; i, f = sigma(a); z = k sigma(a_z) - k/2
//             c = f c_{t-1} + i z  (CIFG: c_{t-1} + i (z - c_{t-1}); no f: c_{t-1} + i z)
//             h(c) = k' sigma(s' c) - k'/2;  a_o += P_o c; o = sigma(a_o);  y_hat = o h(c)
//   backward  delta_o = sum_cells dy_hat h(c) alpha_o o(1-o) (+ dq_o alpha_o o(1-o))
//             dc = dc_carried + dy_hat o h'(c) + P_o delta_o
//             delta_i = sum_cells dc K_i alpha_i i(1-i), K_i = z (CIFG: z - c_{t-1})
//             delta_f = sum_cells dc c_{t-1} alpha_f f(1-f);   delta_z = dc i g'(z)
//             dc_{t-1} = dc F_c + P_i delta_i + P_f delta_f,  F_c = f (CIFG 1 - i; no f: 1)
// The tanh family goes through the logistic sigmoid as on the Python side (tanh(a) =
// 2 sigma(2a) - 1, bipolar1 = 2 sigma(a) - 1, bipolar2 = 4 sigma(a) - 2), so that both loops
// compute the same numbers up to round-off.


#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <atomic>

#include "rows_common.h"

namespace {

using namespace lstmlab_native;

// ---------------------------------------------------------------------------------- forward
// the elementwise pass of one step over the rows [r0, r1)
template <typename T>
void forward_rows_range(const Layout& L, int64_t r0, int64_t r1, T* pre0, int64_t pre_stride,
                        const T* bias, const T* cp0, int64_t cp_stride, T* c0_, T* hc0, T* yh0,
                        int64_t h_stride, const T* Pi, const T* Pf, const T* Po) {
  const int64_t H = L.H, cpb = L.cpb, nb = L.nb;
  const T gk = T(act_k(L.g_act)), g_off = -gk / T(2), gs = T(L.zs);
  const T hs = T(act_s(L.h_act)), hk = T(act_k(L.h_act)), h_off = -hk / T(2);
  const int64_t lo = L.sig_lo(), hi = L.sig_hi();
  if (L.common()) {  // the common cell: two vectorised passes, the rows in one call
    common_step(pre0 + r0 * pre_stride, bias, cp0 + r0 * cp_stride, c0_ + r0 * h_stride,
                hc0 + r0 * h_stride, yh0 + r0 * h_stride, H, gs, gk, g_off, hs, hk, h_off, L.zo(),
                r1 - r0, pre_stride, cp_stride, h_stride);
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    T* pre = pre0 + r * pre_stride;
    const T* cp = cp0 + r * cp_stride;
    T* c = c0_ + r * h_stride;
    T* hc = hc0 + r * h_stride;
    T* yh = yh0 + r * h_stride;
    if (L.common_peep()) {  // with peepholes (vanilla): two vectorised passes too
      peep_step(pre, bias, cp, Pi, Pf, Po, c, hc, yh, H, gs, gk, g_off, hs, hk, h_off);
      continue;
    }
    for (int64_t d = 0; d < L.D; ++d) pre[d] += bias[d];
    if (L.peep) {  // the input and forget gates see c_{t-1}
      for (const auto& [off, P] : {std::pair<int64_t, const T*>{L.off_i, Pi}, {L.off_f, Pf}}) {
        if (off < 0) continue;
        T* a = pre + off;
        if (cpb == 1) {
          for (int64_t j = 0; j < nb; ++j) a[j] += cp[j] * P[j];
        } else {
          for (int64_t j = 0; j < nb; ++j) {
            T s = 0;
            for (int64_t k = 0; k < cpb; ++k) s += cp[j * cpb + k] * P[j * cpb + k];
            a[j] += s;
          }
        }
      }
    }
    // one sigmoid pass over the rows [lo, hi); the block input, when in it, then becomes
    // k sigma(a) - k/2 (its argument scale is in the weights)
    if (lo == 0) {
      sigmoid_affine(pre, pre, H, gs, gk, g_off);
      sigmoid_affine(pre + H, pre + H, hi - H, T(1), T(1), T(0));
    } else if (hi > lo) {
      sigmoid_affine(pre + lo, pre + lo, hi - lo, T(1), T(1), T(0));
    }
    const T* z = pre;
    const T* gi = L.has_i ? pre + L.off_i : nullptr;
    const T* gf = L.has_f ? pre + L.off_f : nullptr;
    for (int64_t d = 0; d < H; ++d) {
      const int64_t j = cpb == 1 ? d : d / cpb;
      T cv;
      if (L.coupled) {
        cv = cp[d] + gi[j] * (z[d] - cp[d]);
      } else if (gf != nullptr) {
        cv = gf[j] * cp[d] + (gi != nullptr ? gi[j] * z[d] : z[d]);
      } else {
        cv = cp[d] + (gi != nullptr ? gi[j] * z[d] : z[d]);
      }
      c[d] = cv;
    }
    if (L.h_act == IDENTITY) {
      std::memcpy(hc, c, sizeof(T) * H);
    } else {
      sigmoid_affine(c, hc, H, hs, hk, h_off);
    }
    if (L.has_o) {
      T* o = pre + L.off_o;
      if (L.peep) {  // the output gate sees c_t
        for (int64_t j = 0; j < nb; ++j) {
          T s = 0;
          for (int64_t k = 0; k < cpb; ++k) s += c[j * cpb + k] * Po[j * cpb + k];
          o[j] = sigmoid(o[j] + s);
        }
      }
      for (int64_t d = 0; d < H; ++d) yh[d] = o[cpb == 1 ? d : d / cpb] * hc[d];
    } else {
      for (int64_t d = 0; d < H; ++d) yh[d] = hc[d];
    }
  }
}

// forward calls that split each step's product over the threads with its pass (fused_step
// below): a count the tests read, so that a test of that path cannot pass without it
std::atomic<int64_t> fused_calls{0};
int64_t fused_step_calls() { return fused_calls.load(); }

// ... over the n rows alive, split over the threads
template <typename T>
void forward_rows_kernel(const Layout& L, int64_t n, T* pre0, int64_t pre_stride, const T* bias,
                         const T* cp0, int64_t cp_stride, T* c0_, T* hc0, T* yh0,
                         int64_t h_stride, const T* Pi, const T* Pf, const T* Po) {
  at::parallel_for(0, n, grain(L.D + 4 * L.H), [&](int64_t r0, int64_t r1) {
    forward_rows_range(L, r0, r1, pre0, pre_stride, bias, cp0, cp_stride, c0_, hc0, yh0,
                       h_stride, Pi, Pf, Po);
  });
}

// G-LSTM: where group j's block of D/k pre-activations (group-local order z | i | f | o) lies in
// the global rows: a section (global start, rows per group, group-local start) per z and gate
struct GroupSections {
  int64_t k = 0, Dk = 0, n = 0;
  int64_t start[4], w[4], local[4];
  GroupSections(const Layout& L, int64_t k_) : k(k_) {
    if (k <= 0) return;
    Dk = L.D / k;
    start[0] = 0, w[0] = L.H / k, local[0] = 0, n = 1;
    int64_t at = L.H / k;
    for (int64_t off : {L.off_i, L.off_f, L.off_o}) {
      if (off < 0) continue;
      start[n] = off, w[n] = L.nb / k, local[n] = at, at += L.nb / k, ++n;
    }
  }
  // global row (D) <- group-local rows (k x Dk), or back
  template <typename T>
  void to_global(const T* g, T* a) const {
    for (int64_t q = 0; q < n; ++q)
      for (int64_t j = 0; j < k; ++j)
        std::memcpy(a + start[q] + j * w[q], g + j * Dk + local[q], sizeof(T) * w[q]);
  }
  template <typename T>
  void to_groups(const T* a, T* g) const {
    for (int64_t q = 0; q < n; ++q)
      for (int64_t j = 0; j < k; ++j)
        std::memcpy(g + j * Dk + local[q], a + start[q] + j * w[q], sizeof(T) * w[q]);
  }
};

void forward_rows(const at::Tensor& x2_, const at::Tensor& Wt, const at::Tensor& bias_,
                  const at::Tensor& Rt, const at::Tensor& h0, const at::Tensor& c0,
                  at::Tensor ZA, at::Tensor C, at::Tensor HC, at::Tensor Y,
                  const c10::optional<at::Tensor>& Yh, const c10::optional<at::Tensor>& Wpt,
                  const c10::optional<at::Tensor>& Qt, const c10::optional<at::Tensor>& Pi,
                  const c10::optional<at::Tensor>& Pf, const c10::optional<at::Tensor>& Po,
                  at::IntArrayRef batch_sizes, at::IntArrayRef cfg,
                  const c10::optional<at::Tensor>& MX, const c10::optional<at::Tensor>& U,
                  const c10::optional<at::Tensor>& Mm, const c10::optional<at::Tensor>& Wmh) {
  const Layout L(cfg);
  TORCH_CHECK(L.order == 0 || (L.common() && !(Wmh.has_value() && Wmh->defined()) &&
                               !(Qt.has_value() && Qt->defined())),
              "lstmlab native core: torch's gate order only for the common cell's plain layer");
  const int64_t T = Y.size(0), B = ZA.size(1), D = ZA.size(2), H = L.H, Hr = Y.size(2);
  // an intermediate of M features takes y_{t-1}'s place in the recurrent product (given Wmh):
  //   mLSTM (MX given):  u_t = W_mh y_{t-1},  m_t = (W_mx x_t) * u_t,  a_t = R m_t + b
  //   F-LSTM (no MX):    u_t = W1x x_t (in U already) + W1h y_{t-1},  a_t = W2 u_t + b, and no
  //                      input projection of its own (R is W2, Wmh is W1h)
  //   G-LSTM (Wmh 3-D):  U = XG (T, B, k, D/k) holds each step's input part and bias in group
  //                      order; the step adds y_{t-1}'s group slices times Wmh = Rg (k, D/k,
  //                      Hr/k) and moves the rows to their global places (no R, no bias here)
  const bool inter = Wmh.has_value() && Wmh->defined();
  const bool grouped = inter && Wmh->dim() == 3;
  const bool mult = inter && !grouped && MX.has_value() && MX->defined();
  const bool fact = inter && !grouped && !mult;
  const int64_t M = inter && !grouped ? Wmh->size(0) : 0;
  TORCH_CHECK(!inter || grouped || (U->is_contiguous() && U->size(0) == T && U->size(2) == M),
              "lstmlab native core: the intermediate U must be contiguous (T, B, M)");
  TORCH_CHECK(!grouped || (U->is_contiguous() && Wmh->is_contiguous() && U->dim() == 4 &&
                           U->size(0) == T && U->size(2) * U->size(3) == D &&
                           Wmh->size(0) == U->size(2) && Wmh->size(0) * Wmh->size(2) == Hr),
              "lstmlab native core: G-LSTM's XG (T, B, k, D/k) and Rg (k, D/k, Hr/k)");
  const GroupSections sec(L, grouped ? Wmh->size(0) : 0);
  // the weights' shapes against the buffers' (a mismatch would read out of bounds)
  const int64_t Kr_ = inter && !grouped ? M : Hr;
  TORCH_CHECK(fact || grouped || (Wt.dim() == 2 && Wt.size(0) == x2_.size(1) && Wt.size(1) == D),
              "lstmlab native core: W must be (I, D) = (", x2_.size(1), ", ", D, ")");
  TORCH_CHECK(grouped || (Rt.dim() == 2 && Rt.size(0) == Kr_ && Rt.size(1) == D),
              "lstmlab native core: R must be (", Kr_, ", ", D, ")");
  TORCH_CHECK(!(Wpt.has_value() && Wpt->defined()) ||
                  (Wpt->dim() == 2 && Wpt->size(0) == H && Wpt->size(1) == Hr),
              "lstmlab native core: W_p must be (H, Hr)");
  TORCH_CHECK(!(Qt.has_value() && Qt->defined()) ||
                  (Qt->dim() == 2 && Qt->size(0) == L.G && Qt->size(1) == L.G),
              "lstmlab native core: Q must be (G, G)");
  TORCH_CHECK(!inter || U->size(1) == B, "lstmlab native core: U's batch");
  TORCH_CHECK(!mult || (Wmh->dim() == 2 && Wmh->size(1) == Hr && MX->size(0) == T &&
                        MX->size(1) == B && Mm->size(1) == B && Mm->size(2) == M),
              "lstmlab native core: mLSTM's W_mh (M, Hr), W_mx x and m (T, B, M)");
  TORCH_CHECK(!grouped || (L.H % sec.k == 0 && L.nb % sec.k == 0 && U->size(3) == sec.Dk &&
                           Wmh->size(1) == sec.Dk),
              "lstmlab native core: G-LSTM's groups must divide H and the blocks");
  TORCH_CHECK(!mult || (MX->is_contiguous() && Mm->is_contiguous() && MX->size(2) == M &&
                        Mm->size(0) == T),
              "lstmlab native core: mLSTM buffers must be contiguous (T, B, M)");
  TORCH_CHECK(D == L.D, "lstmlab native core: ZA has ", D, " pre-activation rows, expected ", L.D);
  TORCH_CHECK(int64_t(batch_sizes.size()) == T, "lstmlab native core: ", batch_sizes.size(),
              " batch sizes for ", T, " steps");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&ZA, &C, &HC, &Y, &h0, &c0})
    TORCH_CHECK(t->is_contiguous(), "lstmlab native core: the step buffers must be contiguous");
  TORCH_CHECK(h0.numel() == B * Hr && c0.numel() == B * H && C.size(1) == B && C.size(2) == H &&
                  HC.size(1) == B && HC.size(2) == H && Y.size(1) == B,
              "lstmlab native core: h0 (", B, ", ", Hr, "), c0, C and h(C) (., ", B, ", ", H,
              ") and Y (T, ", B, ", .)");
  const at::Tensor x2 = x2_.contiguous(), bias = bias_.contiguous();
  TORCH_CHECK(bias.numel() == D, "lstmlab native core: bias of ", bias.numel(), ", expected ", D);
  const int64_t k = std::max<int64_t>(1, cfg[C_CHUNK]);
  const bool proj = Wpt.has_value() && Wpt->defined();
  const bool fgr = Qt.has_value() && Qt->defined();
  TORCH_CHECK(!proj || Yh->is_contiguous(), "lstmlab native core: Yh must be contiguous");
  at::Tensor Yhat = proj ? *Yh : Y;
  // ZA, h(C) and y_hat hold every step, or (no backward to come) a ring of steps: ZA one chunk
  // of k steps, h(C) and y_hat one step
  // and C all steps or two (c_{t-1}, c_t)
  const int64_t rz = ZA.size(0), rh = HC.size(0), ry = Yhat.size(0), rc = C.size(0);
  TORCH_CHECK(rz == T || (rz == k && !fgr), "lstmlab native core: ZA holds ", rz, " steps");
  TORCH_CHECK(rc == T || rc == 2, "lstmlab native core: C holds ", rc, " steps");
  TORCH_CHECK((rh == T || rh == 1) && (ry == T || ry == 1), "lstmlab native core: h(C) steps");
  AT_DISPATCH_FLOATING_TYPES(ZA.scalar_type(), "lstmlab_forward_rows", [&] {
    using S = scalar_t;
    const S* Pi_ = opt_ptr<S>(Pi);
    const S* Pf_ = opt_ptr<S>(Pf);
    const S* Po_ = opt_ptr<S>(Po);
    S* za = ZA.data_ptr<S>();
    S* c = C.data_ptr<S>();
    S* hc = HC.data_ptr<S>();
    S* y = Y.data_ptr<S>();
    S* yh = Yhat.data_ptr<S>();
    // the weights come as (in, out) matrices: row-major, or transposed views of the (out, in)
    // weights as they are kept (no copy)
    const RightOperand<S> W_(Wt), R_(Rt);
    const RightOperand<S> Wp_ = proj ? RightOperand<S>(*Wpt) : W_;
    const RightOperand<S> Q_ = fgr ? RightOperand<S>(*Qt) : W_;
    const int64_t I = x2.size(1);
    const S* x_ = x2.data_ptr<S>();
    const S* b_ = bias.data_ptr<S>();
    const S* y_prev = h0.data_ptr<S>();
    const S* c_prev = c0.data_ptr<S>();
    const int64_t Kr = inter ? M : Hr;  // what the recurrent product multiplies: y_{t-1}, m_t, u_t
    const StepProduct<S> rec(R_.p, D, Kr, R_.ld, B, grouped ? 0 : T, R_.trans);  // + R y_{t-1}
    const RightOperand<S> Wmh_ = inter && !grouped ? RightOperand<S>(Wmh->t()) : W_;  // (Hr, M)
    const StepProduct<S> mh(Wmh_.p, M, Hr, Wmh_.ld, B, inter && !grouped ? T : 0, Wmh_.trans);
    const S* rg = grouped ? Wmh->data_ptr<S>() : nullptr;  // (k, D/k, Hr/k)
    const int64_t Hk = grouped ? Hr / sec.k : 0;
    // where a step's recurrent product is below the bound of one thread (serial_flops) and
    // the rows make several tasks, each thread forms its own rows' product and then runs their
    // elementwise pass: one fork and join per step, and the product split too (else MKL runs
    // it on one thread, then the pass splits)
    // (so do larger products once each thread has 128 rows of its own: its share is then a
    // product MKL runs well on one thread; (1000, 32, 32) at two threads: 104 -> 98 us a step)
    const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
    const bool fused_step = !inter && !fgr && !proj && threads > 1 &&
                            (2.0 * double(B) * double(D) * double(Hr) < serial_flops() ||
                             B >= 128 * threads) &&
                            B >= 2 * grain(L.D + 4 * H);
    if (fused_step) fused_calls.fetch_add(1);
    // the input projection of a chunk of steps: float32 on W packed once where two chunks and
    // more are whole (the BLAS would pack it again in each product; the same sums)
    const int64_t kk = std::min(k, T);
    // (not batch 1's row_gemv: one row of x is a product of its own only at T = 1)
    const StepProduct<S> inp(W_.p, D, I, W_.ld, kk * B,
                             fact || grouped || kk * B < 2 ? 0 : T / kk, W_.trans,
                             /*min_steps=*/2);
    const S* mx = mult ? MX->data_ptr<S>() : nullptr;
    S* u = inter ? U->data_ptr<S>() : nullptr;
    S* mm = mult ? Mm->data_ptr<S>() : nullptr;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = batch_sizes[t];
      if (n == 0) break;
      if (t % k == 0 && !fact && !grouped) {  // the input projection of the next chunk of steps
        // (the bias is added in the step's elementwise pass, not broadcast into the rows here)
        const int64_t m = std::min(k, T - t);
        inp(m * B, x_ + t * B * I, I, S(0), za + (t % rz) * B * D, D);
      }
      S* pre = za + (t % rz) * B * D;
      if (mult) {
        S* u_t = u + t * B * M;
        S* m_t = mm + t * B * M;
        const S* mx_t = mx + t * B * M;
        mh(n, y_prev, Hr, S(0), u_t, M);
        for (int64_t e = 0; e < n * M; ++e) m_t[e] = mx_t[e] * u_t[e];
        rec(n, m_t, M, S(1), pre, D);
      } else if (grouped) {  // XG_t += y_{t-1}'s slices times Rg (group by group), to global rows
        S* g_t = u + t * B * D;
        for (int64_t j = 0; j < sec.k; ++j)
          gemm_rows<S>(n, sec.Dk, Hk, y_prev + j * Hk, Hr, rg + j * sec.Dk * Hk, Hk, S(1),
                       g_t + j * sec.Dk, D, true);
        for (int64_t r = 0; r < n; ++r) sec.to_global(g_t + r * D, pre + r * D);
      } else if (fact) {  // u_t += W1h y_{t-1};  a_t = W2 u_t (the bias comes with the gates)
        S* u_t = u + t * B * M;
        mh(n, y_prev, Hr, S(1), u_t, M);
        rec(n, u_t, M, S(0), pre, D);
      } else if (fused_step) {  // small products: each thread its rows' product and pass
        S* c_t = c + (t % rc) * B * H;
        S* y_t = y + t * B * Hr;  // (no projection: y_hat is y)
        S* hc_t = hc + (t % rh) * B * H;
        at::parallel_for(0, n, grain(L.D + 4 * H), [&](int64_t r0, int64_t r1) {
          rec(r1 - r0, y_prev + r0 * Hr, Hr, S(1), pre + r0 * D, D);
          forward_rows_range<S>(L, r0, r1, pre, D, b_, c_prev, H, c_t, hc_t, y_t, H, Pi_, Pf_,
                                Po_);
        });
        y_prev = y_t;
        c_prev = c_t;
        continue;
      } else {
        rec(n, y_prev, Hr, S(1), pre, D);
      }
      if (fgr && t > 0) {  // full gate recurrence: + Q q_{t-1} on the gate rows
        gemm_rows<S>(n, L.G, L.G, pre - B * D + H, D, Q_.p, Q_.ld, S(1), pre + H, D, Q_.trans);
      }
      S* c_t = c + (t % rc) * B * H;
      S* yh_t = yh + (t % ry) * B * H;
      forward_rows_kernel<S>(L, n, pre, D, b_, c_prev, H, c_t, hc + (t % rh) * B * H, yh_t, H,
                             Pi_, Pf_, Po_);
      S* y_t = y + t * B * Hr;
      if (proj) gemm_rows<S>(n, Hr, H, yh_t, H, Wp_.p, Wp_.ld, S(0), y_t, Hr, Wp_.trans);
      y_prev = y_t;
      c_prev = c_t;
    }
  });
}

// ------------------------------------------------------------------ torch.nn.LSTM's stack
// The drop-in's inference (lstmlab.TorchLSTM without a graph): every layer and direction of
// torch.nn.LSTM's stack in one call, on torch's parameters as the module keeps them
// (params: its flat weights, [W_ih (4H, I), W_hh (4H, H), b_ih, b_hh] per layer-direction,
// the biases left out where has_biases is false), the pre-activation rows read in torch's gate
// order i | f | g | o. x (T, B, I) time-major; hx, cx (layers * directions, B, H) or absent
// (zeros). Returns the last layer's output (T, B, directions * H) and h_n, c_n. The reverse
// direction runs on the time-reversed input and its output is reversed back (dense sequences
// only: no lengths here). chunk: the steps per input-projection product.
// the stack on the rows of x given (every check made by torch_lstm below)
std::tuple<at::Tensor, at::Tensor, at::Tensor> torch_stack(
    const at::Tensor& x, at::TensorList params, const c10::optional<at::Tensor>& hx,
    const c10::optional<at::Tensor>& cx, int64_t num_layers, bool bidirectional,
    bool has_biases, int64_t chunk) {
  const int64_t nd = bidirectional ? 2 : 1, per = has_biases ? 4 : 2;
  const int64_t T = x.size(0), B = x.size(1), H = params[1].size(-1), D = 4 * H;
  const std::vector<int64_t> cfg = {H, 1, 1, 1, 1, 0, 0, TANH, TANH,
                                    std::max<int64_t>(1, std::min(chunk, T)), 2, 1};
  const std::vector<int64_t> bs(T, B);
  at::Tensor h_n = at::empty({num_layers * nd, B, H}, x.options());
  at::Tensor c_n = at::empty_like(h_n);
  const at::Tensor zero = given(hx) && given(cx) ? at::Tensor() : at::zeros({B, H}, x.options());
  const at::Tensor no_bias = has_biases ? at::Tensor() : at::zeros({D}, x.options());
  at::Tensor layer_in = x;
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    std::vector<at::Tensor> outs;
    for (int64_t d = 0; d < nd; ++d) {
      const int64_t k = layer * nd + d;
      const at::Tensor& W = params[k * per];
      const at::Tensor& R = params[k * per + 1];
      TORCH_CHECK(W.dim() == 2 && W.size(0) == D && W.size(1) == layer_in.size(2) &&
                      R.dim() == 2 && R.size(0) == D && R.size(1) == H,
                  "lstmlab native core: layer-direction ", k, "'s weights must be (", D, ", ",
                  layer_in.size(2), ") and (", D, ", ", H, ")");
      for (int64_t q = 2; has_biases && q < 4; ++q)
        TORCH_CHECK(params[k * per + q].dim() == 1 && params[k * per + q].size(0) == D,
                    "lstmlab native core: layer-direction ", k, "'s biases must be (", D, ")");
      const at::Tensor bias = has_biases ? params[k * per + 2] + params[k * per + 3] : no_bias;
      const at::Tensor xin = (d == 0 ? layer_in : layer_in.flip(0)).contiguous();
      const at::Tensor h0 = given(hx) ? (*hx)[k].contiguous() : zero;
      const at::Tensor c0 = given(cx) ? (*cx)[k].contiguous() : zero;
      at::Tensor Y = at::empty({T, B, H}, x.options());
      at::Tensor ZA = at::empty({cfg[C_CHUNK], B, D}, x.options());
      at::Tensor C = at::empty({2, B, H}, x.options());
      at::Tensor HC = at::empty({1, B, H}, x.options());
      forward_rows(xin.view({T * B, xin.size(2)}), W.is_contiguous() ? W.t() : W.t().contiguous(),
                   bias, R.is_contiguous() ? R.t() : R.t().contiguous(), h0, c0, ZA, C, HC, Y,
                   c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt,
                   c10::nullopt, bs, cfg, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt);
      const int64_t bytes = B * H * int64_t(x.element_size());  // (memcpy: no dispatch)
      std::memcpy(static_cast<char*>(h_n.data_ptr()) + k * bytes,
                  static_cast<const char*>(Y.data_ptr()) + (T - 1) * bytes, bytes);
      std::memcpy(static_cast<char*>(c_n.data_ptr()) + k * bytes,
                  static_cast<const char*>(C.data_ptr()) + ((T - 1) % 2) * bytes, bytes);
      outs.push_back(d == 0 ? Y : Y.flip(0));
    }
    layer_in = nd == 1 ? outs[0] : at::cat(outs, 2);
  }
  return {layer_in, h_n, c_n};
}

// S tasks over the threads, each with the caller's thread-local state (inference mode, grad
// mode, ...: the outputs made by the caller are inference tensors under inference_mode, which
// only a thread in that mode may write) and its products on its own thread
template <typename F>
void over_slices(int64_t S, const F& f) {
  const at::ThreadLocalState state;
  at::parallel_for(0, S, 1, [&](int64_t a, int64_t b) {
    const at::ThreadLocalStateGuard guard(state);
    const OneMklThread serial;
    for (int64_t q = a; q < b; ++q) f(q);
  });
}

// forward calls that ran the batch in slices of rows, a thread each (torch_lstm below): a
// count the tests read
std::atomic<int64_t> split_calls{0};
int64_t split_stack_calls() { return split_calls.load(); }

// The rows of a batch are independent sequences: given slices > 1 (the caller's choice,
// layout.batch_slices), each of that many threads runs the whole stack, every step and layer,
// on its own slice of the rows (its copy of x's rows in, its output rows copied out), with
// its products on its own thread: no fork and join per step.
std::tuple<at::Tensor, at::Tensor, at::Tensor> torch_lstm(
    const at::Tensor& x, at::TensorList params, const c10::optional<at::Tensor>& hx,
    const c10::optional<at::Tensor>& cx, int64_t num_layers, bool bidirectional,
    bool has_biases, int64_t chunk, int64_t slices) {
  const int64_t nd = bidirectional ? 2 : 1, per = has_biases ? 4 : 2;
  TORCH_CHECK(x.dim() == 3 && x.size(0) > 0 && num_layers > 0,
              "lstmlab native core: torch_lstm takes x (T, B, I) with T > 0");
  TORCH_CHECK(int64_t(params.size()) == num_layers * nd * per, "lstmlab native core: ",
              params.size(), " parameters for ", num_layers * nd, " layer-directions");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "lstmlab native core: torch_lstm runs float32 and float64");
  TORCH_CHECK(slices >= 1, "lstmlab native core: torch_lstm takes slices >= 1");
  const int64_t T = x.size(0), B = x.size(1), H = params[1].size(-1);
  for (const at::Tensor& p : params)
    TORCH_CHECK(p.scalar_type() == x.scalar_type() && p.device() == x.device(),
                "lstmlab native core: every parameter of the input's dtype and device");
  for (const auto* s : {&hx, &cx})
    TORCH_CHECK(!given(*s) || ((*s)->dim() == 3 && (*s)->size(0) == num_layers * nd &&
                               (*s)->size(1) == B && (*s)->size(2) == H &&
                               (*s)->scalar_type() == x.scalar_type()),
                "lstmlab native core: the initial states must be (", num_layers * nd, ", ", B,
                ", ", H, ")");
  slices = std::min(slices, B);
  if (slices <= 1 || at::in_parallel_region())
    return torch_stack(x, params, hx, cx, num_layers, bidirectional, has_biases, chunk);
  at::Tensor out = at::empty({T, B, nd * H}, x.options());
  at::Tensor h_n = at::empty({num_layers * nd, B, H}, x.options());
  at::Tensor c_n = at::empty_like(h_n);
  over_slices(slices, [&](int64_t q) {
    const int64_t r0 = q * B / slices, n = (q + 1) * B / slices - r0;
    const auto rows = [&](const c10::optional<at::Tensor>& s) -> c10::optional<at::Tensor> {
      if (!given(s)) return c10::nullopt;
      return s->narrow(1, r0, n).contiguous();
    };
    auto [y, h, c] = torch_stack(x.narrow(1, r0, n).contiguous(), params, rows(hx), rows(cx),
                                 num_layers, bidirectional, has_biases, chunk);
    out.narrow(1, r0, n).copy_(y);
    h_n.narrow(1, r0, n).copy_(h);
    c_n.narrow(1, r0, n).copy_(c);
  });
  split_calls.fetch_add(1);
  return {out, h_n, c_n};
}

// --------------------------------------------------------------------------------- backward
template <typename T>
void backward_rows_kernel(const Layout& L, int64_t n, const T* za0, const T* c0_,
                          const T* hc0, const T* cp0, int64_t cp_stride, const T* dyh0,
                          int64_t dyh_stride, T* dc0, const T* dq0, T* dpre0, const T* Pi,
                          const T* Pf, const T* Po, T al_i, T al_f, T al_o) {
  const int64_t H = L.H, cpb = L.cpb, nb = L.nb, D = L.D, G = L.G;
  const bool common = L.common() && dq0 == nullptr;  // one vectorised pass (common_back)
  // the same cell with peepholes (vanilla): one vectorised pass too (peep_back)
  const bool peep1 = L.common_peep() && dq0 == nullptr;
  const T ga = T(deriv_a(L.g_act)), gb = T(deriv_b(L.g_act));
  const T ha = T(deriv_a(L.h_act)), hb = T(deriv_b(L.h_act));
  at::parallel_for(0, n, grain(D + 6 * H), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (common) {
        common_back(za0 + r * D, hc0 + r * H, cp0 + r * cp_stride, dyh0 + r * dyh_stride,
                    dc0 + r * H, dpre0 + r * D, H, L.zo(), al_i, al_f, al_o, ga, gb, ha, hb);
        continue;
      }
      if (peep1) {
        peep_back(za0 + r * D, hc0 + r * H, cp0 + r * cp_stride, dyh0 + r * dyh_stride,
                  dc0 + r * H, dpre0 + r * D, H, 0, al_i, al_f, al_o, ga, gb, ha, hb, Pi, Pf, Po);
        continue;
      }
      const T* za = za0 + r * D;
      const T* z = za;
      const T* c = c0_ + r * H;
      const T* hc = hc0 + r * H;
      const T* cp = cp0 + r * cp_stride;
      const T* dyh = dyh0 + r * dyh_stride;
      T* dc = dc0 + r * H;  // in: the carried dc_t, out: dc_{t-1}
      const T* dq = dq0 != nullptr ? dq0 + r * G : nullptr;
      T* dpre = dpre0 + r * D;
      const T* gi = L.has_i ? za + L.off_i : nullptr;
      const T* gf = L.has_f ? za + L.off_f : nullptr;
      const T* go = L.has_o ? za + L.off_o : nullptr;
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t c0j = j * cpb;
        // output gate: delta_o, then dc = carried + dy_hat o h'(c) + P_o delta_o
        T d_o = 0;
        if (go != nullptr) {
          const T o = go[j], sa = al_o * (o - o * o);
          for (int64_t q = 0; q < cpb; ++q) d_o += dyh[c0j + q] * (hc[c0j + q] * sa);
          if (dq != nullptr) d_o += dq[L.off_o - H + j] * sa;
          dpre[L.off_o + j] = d_o;
          for (int64_t q = 0; q < cpb; ++q) {
            const int64_t d = c0j + q;
            T v = dc[d] + dyh[d] * times_derivative<T>(L.h_act, o, hc[d]);
            if (L.peep) v += Po[d] * d_o;
            dc[d] = v;
          }
        } else {
          for (int64_t q = 0; q < cpb; ++q) {
            const int64_t d = c0j + q;
            dc[d] += dyh[d] * times_derivative<T>(L.h_act, T(1), hc[d]);
          }
        }
        // input and forget gates: sums over the block's cells
        T d_i = 0, d_f = 0;
        if (gi != nullptr) {
          const T i = gi[j], sa = al_i * (i - i * i);
          for (int64_t q = 0; q < cpb; ++q) {
            const int64_t d = c0j + q;
            const T K = L.coupled ? z[d] - cp[d] : z[d];
            d_i += dc[d] * (K * sa);
          }
          if (dq != nullptr) d_i += dq[L.off_i - H + j] * sa;
          dpre[L.off_i + j] = d_i;
        }
        if (gf != nullptr) {
          const T f = gf[j], sa = al_f * (f - f * f);
          for (int64_t q = 0; q < cpb; ++q) d_f += dc[c0j + q] * (cp[c0j + q] * sa);
          if (dq != nullptr) d_f += dq[L.off_f - H + j] * sa;
          dpre[L.off_f + j] = d_f;
        }
        // block input, and the error carried to c_{t-1}
        const T iw = gi != nullptr ? gi[j] : T(1);
        const T F = L.coupled ? T(1) - gi[j] : (gf != nullptr ? gf[j] : T(1));
        for (int64_t q = 0; q < cpb; ++q) {
          const int64_t d = c0j + q;
          dpre[d] = dc[d] * times_derivative<T>(L.g_act, iw, z[d]);
          T v = dc[d] * F;
          if (L.peep) {
            if (gi != nullptr) v += Pi[d] * d_i;
            if (gf != nullptr) v += Pf[d] * d_f;
          }
          dc[d] = v;
        }
      }
    }
  });
}

void backward_rows(const at::Tensor& ZA, const at::Tensor& C, const at::Tensor& HC,
                   const at::Tensor& c0, const at::Tensor& R, const c10::optional<at::Tensor>& Wp,
                   const c10::optional<at::Tensor>& Q, const c10::optional<at::Tensor>& Pi,
                   const c10::optional<at::Tensor>& Pf, const c10::optional<at::Tensor>& Po,
                   const c10::optional<at::Tensor>& dY, const c10::optional<at::Tensor>& dC,
                   at::Tensor dPre, const c10::optional<at::Tensor>& DY, at::Tensor dy_next,
                   at::Tensor dc_next, const c10::optional<at::Tensor>& dq_next,
                   at::IntArrayRef batch_sizes, at::IntArrayRef cfg,
                   at::ArrayRef<double> alpha, const c10::optional<at::Tensor>& MX,
                   const c10::optional<at::Tensor>& U, const c10::optional<at::Tensor>& Wmh,
                   const c10::optional<at::Tensor>& dU, const c10::optional<at::Tensor>& dMX) {
  const Layout L(cfg);
  TORCH_CHECK(L.order == 0 || (L.common() && !given(Wp) && !given(Q) && !given(Wmh)),
              "lstmlab native core: torch's gate order only for the common cell's plain layer");
  const int64_t T = ZA.size(0), B = ZA.size(1), D = ZA.size(2), H = L.H;
  const int64_t Hr = dy_next.size(1), G = L.G;
  // mLSTM (MX given): dm = delta R, du = dm * (W_mx x), d(W_mx x) = dm * u, dy_{t-1} = du W_mh
  // F-LSTM (no MX):    e_t = delta W2 (kept in dU for the weight gradients), dy_{t-1} = e_t W1h
  // G-LSTM (Wmh = Rg 3-D): delta_t in group order into dU = DG, dy_{t-1} = its slices times Rg
  const bool inter = Wmh.has_value() && Wmh->defined();
  const bool grouped = inter && Wmh->dim() == 3;
  const bool mult = inter && !grouped && MX.has_value() && MX->defined();
  const int64_t M = inter && !grouped ? Wmh->size(0) : 0;
  TORCH_CHECK(!inter || (Wmh->is_contiguous() && dU->is_contiguous() &&
                         (grouped ? dU->size(2) * dU->size(3) == D : dU->size(2) == M)),
              "lstmlab native core: the intermediate's buffers must be contiguous");
  const GroupSections sec(L, grouped ? Wmh->size(0) : 0);
  const int64_t Kr_ = inter && !grouped ? M : Hr;
  TORCH_CHECK(grouped || (R.dim() == 2 && R.size(0) == D && R.size(1) == Kr_),
              "lstmlab native core: R must be (", D, ", ", Kr_, ")");
  TORCH_CHECK(!inter || (dU->size(0) == T && dU->size(1) == B),
              "lstmlab native core: the intermediate's gradient buffer (T, B, ...)");
  TORCH_CHECK(!mult || (Wmh->dim() == 2 && Wmh->size(1) == Hr && MX->size(0) == T &&
                        MX->size(1) == B && MX->size(2) == M && U->sizes() == MX->sizes() &&
                        dMX->sizes() == MX->sizes() && dU->size(2) == M),
              "lstmlab native core: mLSTM's W_mh (M, Hr) and buffers (T, B, M)");
  TORCH_CHECK(!grouped || (L.H % sec.k == 0 && L.nb % sec.k == 0 && dU->dim() == 4 &&
                           dU->size(3) == sec.Dk && Wmh->size(1) == sec.Dk &&
                           Wmh->size(2) * sec.k == Hr),
              "lstmlab native core: G-LSTM's groups, Rg (k, D/k, Hr/k) and DG (T, B, k, D/k)");
  TORCH_CHECK(!mult || (MX->is_contiguous() && U->is_contiguous() && dMX->is_contiguous()),
              "lstmlab native core: mLSTM buffers must be contiguous");
  at::Tensor dm_buf = mult ? at::empty({B, M}, dy_next.options()) : at::Tensor();
  TORCH_CHECK(D == L.D, "lstmlab native core: ZA has ", D, " pre-activation rows, expected ", L.D);
  TORCH_CHECK(alpha.size() == 3, "lstmlab native core: alpha must be (i, f, o)");
  TORCH_CHECK(int64_t(batch_sizes.size()) == T, "lstmlab native core: ", batch_sizes.size(),
              " batch sizes for ", T, " steps");
  for (const at::Tensor* t :
       std::initializer_list<const at::Tensor*>{&ZA, &C, &HC, &dPre, &dy_next, &dc_next, &R})
    TORCH_CHECK(t->is_contiguous(), "lstmlab native core: the step buffers must be contiguous");
  TORCH_CHECK(C.size(0) == T && C.size(1) == B && C.size(2) == H && HC.sizes() == C.sizes() &&
                  c0.numel() == B * H && dc_next.numel() == B * H && dy_next.size(0) == B &&
                  dPre.size(0) == T && dPre.size(1) == B && dPre.size(2) == D &&
                  (!given(dY) || (dY->size(0) == T && dY->size(1) == B && dY->size(2) == Hr)) &&
                  (!given(dC) || dC->sizes() == C.sizes()),
              "lstmlab native core: the backward's buffers must be (T, B, .) of the forward's");
  const bool proj = Wp.has_value() && Wp->defined();
  const bool fgr = Q.has_value() && Q->defined();
  // the incoming gradients may be any strided tensors (an expanded ones tensor, say)
  const at::Tensor dYc = dY.has_value() && dY->defined() ? dY->contiguous() : at::Tensor();
  const at::Tensor dCc = dC.has_value() && dC->defined() ? dC->contiguous() : at::Tensor();
  at::Tensor dyh_buf = proj ? at::empty({B, H}, dy_next.options()) : at::Tensor();
  const at::Tensor c0c = c0.contiguous();
  TORCH_CHECK(!proj || (Wp->is_contiguous() && DY->is_contiguous()), "lstmlab native core: W_p");
  TORCH_CHECK(!fgr || (Q->is_contiguous() && dq_next->is_contiguous()), "lstmlab native core: Q");
  AT_DISPATCH_FLOATING_TYPES(ZA.scalar_type(), "lstmlab_backward_rows", [&] {
    using S = scalar_t;
    const S* Pi_ = opt_ptr<S>(Pi);
    const S* Pf_ = opt_ptr<S>(Pf);
    const S* Po_ = opt_ptr<S>(Po);
    const S* za = ZA.data_ptr<S>();
    const S* c = C.data_ptr<S>();
    const S* hc = HC.data_ptr<S>();
    const S* R_ = R.data_ptr<S>();
    const S* Wp_ = proj ? Wp->data_ptr<S>() : nullptr;
    const S* Q_ = fgr ? Q->data_ptr<S>() : nullptr;
    const S* dY_ = dYc.defined() ? dYc.data_ptr<S>() : nullptr;
    const S* dC_ = dCc.defined() ? dCc.data_ptr<S>() : nullptr;
    S* dq = fgr ? dq_next->data_ptr<S>() : nullptr;
    S* dpre0 = dPre.data_ptr<S>();
    S* dy = dy_next.data_ptr<S>();
    S* dc = dc_next.data_ptr<S>();
    S* DY_ = proj ? DY->data_ptr<S>() : nullptr;
    S* dyh = proj ? dyh_buf.data_ptr<S>() : dy;
    int64_t n_after = 0;  // rows alive at step t + 1
    const int64_t Kr = inter ? M : Hr;
    const StepProduct<S> rec(R_, Kr, D, Kr, B, grouped ? 0 : T);  // dy_{t-1} = delta R (dm, e_t)
    const S* Wmh_ = inter ? Wmh->data_ptr<S>() : nullptr;
    const StepProduct<S> mh(Wmh_, Hr, M, Hr, B, inter && !grouped ? T : 0);  // dy = du W_mh
    const int64_t Hk = grouped ? Hr / sec.k : 0;
    const S* mx = mult ? MX->data_ptr<S>() : nullptr;
    const S* u = mult ? U->data_ptr<S>() : nullptr;
    S* du = inter ? dU->data_ptr<S>() : nullptr;
    S* dmx = mult ? dMX->data_ptr<S>() : nullptr;
    S* dm = mult ? dm_buf.data_ptr<S>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t n = batch_sizes[t];
      if (n == 0) continue;
      if (dY_ != nullptr && n > n_after) {  // rows whose last step is t: their output error
        const S* src = dY_ + t * B * Hr;
        for (int64_t i = n_after * Hr; i < n * Hr; ++i) dy[i] += src[i];
      }
      if (proj) {  // dy_hat = dy W_p
        std::memcpy(DY_ + t * B * Hr, dy, sizeof(S) * n * Hr);
        gemm_rows<S>(n, H, Hr, dy, Hr, Wp_, H, S(0), dyh, H);
      }
      if (dC_ != nullptr) {
        const S* src = dC_ + t * B * H;
        for (int64_t i = 0; i < n * H; ++i) dc[i] += src[i];
      }
      const S* cp = t > 0 ? c + (t - 1) * B * H : c0c.data_ptr<S>();
      S* dpre = dpre0 + t * B * D;
      backward_rows_kernel<S>(L, n, za + t * B * D, c + t * B * H, hc + t * B * H, cp, H, dyh,
                              H, dc, dq, dpre, Pi_, Pf_, Po_, S(alpha[0]), S(alpha[1]),
                              S(alpha[2]));
      if (fgr) gemm_rows<S>(n, G, G, dpre + H, D, Q_, G, S(0), dq, G);  // dq = delta_gates Q
      // dy_{t-1} = delta R (mLSTM: du W_mh) + the output error of step t-1
      const bool add_out = dY_ != nullptr && t > 0;
      if (add_out) std::memcpy(dy, dY_ + (t - 1) * B * Hr, sizeof(S) * n * Hr);
      if (mult) {
        rec(n, dpre, D, S(0), dm, M);
        S* du_t = du + t * B * M;
        S* dmx_t = dmx + t * B * M;
        const S* mx_t = mx + t * B * M;
        const S* u_t = u + t * B * M;
        for (int64_t e = 0; e < n * M; ++e) {
          du_t[e] = dm[e] * mx_t[e];
          dmx_t[e] = dm[e] * u_t[e];
        }
        mh(n, du_t, M, add_out ? S(1) : S(0), dy, Hr);
      } else if (grouped) {  // G-LSTM: delta_t to group order, then group by group
        S* g_t = du + t * B * D;
        for (int64_t r = 0; r < n; ++r) sec.to_groups(dpre + r * D, g_t + r * D);
        for (int64_t j = 0; j < sec.k; ++j)
          gemm_rows<S>(n, Hk, sec.Dk, g_t + j * sec.Dk, D, Wmh_ + j * sec.Dk * Hk, Hk,
                       add_out ? S(1) : S(0), dy + j * Hk, Hr);
      } else if (inter) {  // F-LSTM
        S* e_t = du + t * B * M;
        rec(n, dpre, D, S(0), e_t, M);
        mh(n, e_t, M, add_out ? S(1) : S(0), dy, Hr);
      } else {
        rec(n, dpre, D, add_out ? S(1) : S(0), dy, Hr);
      }
      n_after = n;
    }
  });
}

}  // namespace

// ------------------------------------------------------- training in slices of rows
// The torch-order layer's training (engines/torch_order.py) at two threads and more: the
// forward and the backward loops of each slice of rows (its own buffers, contiguous (T, b, .))
// on a thread of its own, the products on that thread (as torch_lstm's slices above; the
// weight gradients stay one product over every row, in Python). A count the tests read.
std::atomic<int64_t> slice_train_calls{0};
int64_t sliced_training_calls() { return slice_train_calls.load(); }

void forward_slices(at::TensorList x2, const at::Tensor& Wt, const at::Tensor& bias,
                    const at::Tensor& Rt, at::TensorList h0, at::TensorList c0,
                    at::TensorList ZA, at::TensorList C, at::TensorList HC, at::TensorList Y,
                    at::IntArrayRef cfg) {
  const int64_t S = int64_t(x2.size());
  for (const at::TensorList* l : {&h0, &c0, &ZA, &C, &HC, &Y})
    TORCH_CHECK(int64_t(l->size()) == S, "lstmlab native core: forward_slices takes ", S,
                " tensors in every list");
  for (int64_t q = 0; q < S; ++q)
    TORCH_CHECK(x2[q].dim() == 2 && Y[q].dim() == 3 && ZA[q].dim() == 3 &&
                    x2[q].size(0) == Y[q].size(0) * ZA[q].size(1),
                "lstmlab native core: forward_slices: slice ", q, "'s x2 must have T * b rows");
  const std::vector<int64_t> cf(cfg.begin(), cfg.end());
  over_slices(S, [&](int64_t q) {
    const std::vector<int64_t> bs(Y[q].size(0), ZA[q].size(1));
    forward_rows(x2[q], Wt, bias, Rt, h0[q], c0[q], ZA[q], C[q], HC[q], Y[q], c10::nullopt,
                 c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, bs, cf,
                 c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt);
  });
  slice_train_calls.fetch_add(1);
}

void backward_slices(at::TensorList ZA, at::TensorList C, at::TensorList HC, at::TensorList c0,
                     const at::Tensor& R, at::TensorList dY, at::TensorList dPre,
                     at::TensorList dy_next, at::TensorList dc_next, at::IntArrayRef cfg) {
  const int64_t S = int64_t(ZA.size());
  for (const at::TensorList* l : {&C, &HC, &c0, &dY, &dPre, &dy_next, &dc_next})
    TORCH_CHECK(int64_t(l->size()) == S, "lstmlab native core: backward_slices takes ", S,
                " tensors in every list");
  const std::vector<int64_t> cf(cfg.begin(), cfg.end());
  const std::vector<double> alpha = {1.0, 1.0, 1.0};
  over_slices(S, [&](int64_t q) {
    const std::vector<int64_t> bs(ZA[q].size(0), ZA[q].size(1));
    backward_rows(ZA[q], C[q], HC[q], c0[q], R, c10::nullopt, c10::nullopt, c10::nullopt,
                  c10::nullopt, c10::nullopt, dY[q], c10::nullopt, dPre[q], c10::nullopt,
                  dy_next[q], dc_next[q], c10::nullopt, bs, cf, alpha, c10::nullopt,
                  c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt);
  });
}

TORCH_LIBRARY(lstmlab_native, m) {
  m.def("simd_level() -> int", &simd_level);
  m.def("fused_step_calls() -> int", &fused_step_calls);
  m.def("split_stack_calls() -> int", &split_stack_calls);
  m.def("sliced_training_calls() -> int", &sliced_training_calls);
  m.def(
      "forward_slices(Tensor[] x2, Tensor Wt, Tensor bias, Tensor Rt, Tensor[] h0, Tensor[] c0, "
      "Tensor(a!)[] ZA, Tensor(b!)[] C, Tensor(c!)[] HC, Tensor(d!)[] Y, int[] cfg) -> ()");
  m.def(
      "backward_slices(Tensor[] ZA, Tensor[] C, Tensor[] HC, Tensor[] c0, Tensor R, "
      "Tensor[] dY, Tensor(a!)[] dPre, Tensor(b!)[] dy_next, Tensor(c!)[] dc_next, int[] cfg) "
      "-> ()");
  m.def(
      "forward_rows(Tensor x2, Tensor Wt, Tensor bias, Tensor Rt, Tensor h0, Tensor c0, "
      "Tensor(a!) ZA, Tensor(b!) C, Tensor(c!) HC, Tensor(d!) Y, Tensor(e!)? Yh, Tensor? Wpt, "
      "Tensor? Qt, Tensor? Pi, Tensor? Pf, Tensor? Po, int[] batch_sizes, int[] cfg, "
      "Tensor? MX=None, Tensor(f!)? U=None, Tensor(g!)? Mm=None, Tensor? Wmh=None) -> ()");
  m.def(
      "torch_lstm(Tensor x, Tensor[] params, Tensor? hx, Tensor? cx, int num_layers, "
      "bool bidirectional, bool has_biases, int chunk, int slices=1) -> (Tensor, Tensor, Tensor)");
  m.def(
      "backward_rows(Tensor ZA, Tensor C, Tensor HC, Tensor c0, Tensor R, Tensor? Wp, Tensor? Q, "
      "Tensor? Pi, Tensor? Pf, Tensor? Po, Tensor? dY, Tensor? dC, Tensor(a!) dPre, "
      "Tensor(b!)? DY, Tensor(c!) dy_next, Tensor(d!) dc_next, Tensor(e!)? dq_next, "
      "int[] batch_sizes, int[] cfg, float[] alpha, Tensor? MX=None, Tensor? U=None, "
      "Tensor? Wmh=None, Tensor(f!)? dU=None, Tensor(g!)? dMX=None) -> ()");
}

TORCH_LIBRARY_IMPL(lstmlab_native, CPU, m) {
  m.impl("forward_rows", &forward_rows);
  m.impl("torch_lstm", &torch_lstm);
  m.impl("backward_rows", &backward_rows);
  m.impl("forward_slices", &forward_slices);
  m.impl("backward_slices", &backward_slices);
}

