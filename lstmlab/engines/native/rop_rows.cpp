// The R-forward pass of the bptt engine's batch-major layout (lstmlab/engines/rop.py) in C++.
//
// Hand-written: curvature products are this project's subject. The Python side (rop) forms, per
// chunk of steps, the part of every pre-activation tangent that does not depend on the carried
// tangents (E: dW x, W dx, db, dR y_{t-1}, dQ q, dP c) and the backward's derivative factors
// (bptt._factors); this file runs the chunk's steps. Per step, on the rows alive (tangents
// written a dot below, rows = samples, gates broadcast over the cells of their block):
//   a_t   = E_t + R y._{t-1}  (+ Q q._{t-1} on the gate rows; + P_{i,f} c._{t-1} unless folded;
//           mLSTM: R (mx_t * W_mh y._{t-1}) in place of R y._{t-1})
//   c._t  = F_c c._{t-1} + IGp a_z + K_i a_i + K_f a_f
//   a_o  += P_o c._t (unless folded);   yhat._t = OHp c._t + K_o a_o
//   y._t  = EP_t + W_p yhat._t (projection) or yhat._t;   q._t = SA a_gates (full gate recurrence)
// with one product per step for R y._{t-1} (one more for Q, one for W_p), and one fused pass.

#include <torch/library.h>

#include "rows_common.h"

namespace {

using namespace lstmlab_native;

void rop_rows_chunk(at::Tensor E, const at::Tensor& OHp, const at::Tensor& IGp,
                    const c10::optional<at::Tensor>& Fc, const at::Tensor& SA,
                    const c10::optional<at::Tensor>& Ki, const c10::optional<at::Tensor>& Kf,
                    const c10::optional<at::Tensor>& Ko, const at::Tensor& R,
                    const c10::optional<at::Tensor>& Q, const c10::optional<at::Tensor>& Wp,
                    const c10::optional<at::Tensor>& EP, const c10::optional<at::Tensor>& Pi,
                    const c10::optional<at::Tensor>& Pf, const c10::optional<at::Tensor>& Po,
                    const c10::optional<at::Tensor>& dh0, const c10::optional<at::Tensor>& dc0,
                    at::Tensor dY, at::Tensor dC, const c10::optional<at::Tensor>& dq,
                    const c10::optional<at::Tensor>& dyh_buf, int64_t t0,
                    at::IntArrayRef batch_sizes, at::IntArrayRef cfg, bool fold,
                    const c10::optional<at::Tensor>& MX, const c10::optional<at::Tensor>& Wmh) {
  const Layout L(cfg);
  L.engine_order();
  const int64_t m = E.size(0), B = E.size(1), D = E.size(2), H = L.H, G = L.G, nb = L.nb;
  const int64_t Hr = dY.size(2), cpb = L.cpb;
  TORCH_CHECK(D == L.D, "lstmlab native R-forward: E has ", D, " rows, expected ", L.D);
  TORCH_CHECK(int64_t(batch_sizes.size()) == m, "lstmlab native R-forward: batch sizes");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{
           &E, &OHp, &IGp, &SA, &R, &dY, &dC})
    TORCH_CHECK(t->is_contiguous(), "lstmlab native R-forward: tensors must be contiguous");
  const bool fgr = Q.has_value() && Q->defined();
  const bool proj = Wp.has_value() && Wp->defined();
  const bool peep_open = L.peep && !fold;  // peepholes not folded into F_c and OHp
  // mLSTM: the recurrent term is R (mx_t * W_mh y._{t-1}), mx_t = W_mx x_t of the tape (T, B, M)
  const bool mult = Wmh.has_value() && Wmh->defined();
  const int64_t M = mult ? Wmh->size(0) : 0;
  TORCH_CHECK(!mult || (MX->is_contiguous() && MX->size(1) == B && MX->size(2) == M &&
                        R.size(1) == M),
              "lstmlab native R-forward: mLSTM's W_mx x (T, B, M) and R (D, M)");
  at::Tensor v_buf = mult ? at::empty({B, M}, E.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(E.scalar_type(), "lstmlab_rop_rows", [&] {
    using S = scalar_t;
    S* e = E.data_ptr<S>();
    const S* ohp = OHp.data_ptr<S>();
    const S* igp = IGp.data_ptr<S>();
    const S* fc = opt_ptr<S>(Fc);
    const S* sa = SA.data_ptr<S>();
    const S* ki = opt_ptr<S>(Ki);
    const S* kf = opt_ptr<S>(Kf);
    const S* ko = opt_ptr<S>(Ko);
    const S* pi = opt_ptr<S>(Pi);
    const S* pf = opt_ptr<S>(Pf);
    const S* po = opt_ptr<S>(Po);
    const S* ep = opt_ptr<S>(EP);
    S* dy0 = dY.data_ptr<S>();
    S* dc0_ = dC.data_ptr<S>();
    S* q = fgr ? dq->data_ptr<S>() : nullptr;
    S* dyh0 = proj ? dyh_buf->data_ptr<S>() : nullptr;
    // the right operands: a += y R^T, a_gates += q Q^T, y = yhat W_p^T
    const at::Tensor Rt = R.t().contiguous();  // (Hr, D), mLSTM (M, D)
    const at::Tensor Wmht = mult ? Wmh->t().contiguous() : at::Tensor();  // (Hr, M)
    const S* Wmht_ = mult ? Wmht.data_ptr<S>() : nullptr;
    const S* mx = mult ? MX->data_ptr<S>() : nullptr;
    S* v = mult ? v_buf.data_ptr<S>() : nullptr;
    const at::Tensor Qt = fgr ? Q->t().contiguous() : at::Tensor();
    const at::Tensor Wpt = proj ? Wp->t().contiguous() : at::Tensor();
    const S* Rt_ = Rt.data_ptr<S>();
    const S* Qt_ = fgr ? Qt.data_ptr<S>() : nullptr;
    const S* Wpt_ = proj ? Wpt.data_ptr<S>() : nullptr;
    for (int64_t r = 0; r < m; ++r) {
      const int64_t t = t0 + r, n = batch_sizes[r];
      if (n == 0) break;
      // the tangents of step t-1 (none at step 0 unless the initial state has one)
      const S* y_prev = t > 0 ? dy0 + (t - 1) * B * Hr : opt_ptr<S>(dh0);
      const S* c_prev = t > 0 ? dc0_ + (t - 1) * B * H : opt_ptr<S>(dc0);
      S* a0 = e + r * B * D;
      if (y_prev != nullptr && mult) {  // v = mx_t * (W_mh y._{t-1}), a += R v
        gemm_rows<S>(n, M, Hr, y_prev, Hr, Wmht_, M, S(0), v, M);
        const S* mx_t = mx + t * B * M;
        for (int64_t e2 = 0; e2 < n * M; ++e2) v[e2] *= mx_t[e2];
        gemm_rows<S>(n, D, M, v, M, Rt_, D, S(1), a0, D);
      } else if (y_prev != nullptr) {
        gemm_rows<S>(n, D, Hr, y_prev, Hr, Rt_, D, S(1), a0, D);
      }
      if (fgr && t > 0) gemm_rows<S>(n, G, G, q, G, Qt_, G, S(1), a0 + H, D);
      S* dcT = dc0_ + t * B * H;
      S* yhT = proj ? dyh0 : dy0 + t * B * Hr;
      const int64_t off = r * B;  // this step's rows in the chunk's factor tensors
      at::parallel_for(0, n, grain(D + 4 * H), [&](int64_t r0, int64_t r1) {
        for (int64_t b = r0; b < r1; ++b) {
          S* a = a0 + b * D;
          const S* cp = c_prev != nullptr ? c_prev + b * H : nullptr;
          const S* OH = ohp + (off + b) * H;
          const S* IG = igp + (off + b) * H;
          const S* FC = fc != nullptr ? fc + (off + b) * H : nullptr;
          const S* KI = ki != nullptr ? ki + (off + b) * H : nullptr;
          const S* KF = kf != nullptr ? kf + (off + b) * H : nullptr;
          const S* KO = ko != nullptr ? ko + (off + b) * H : nullptr;
          S* dc = dcT + b * H;
          S* yh = yhT + b * H;
          if (cp != nullptr && peep_open) {  // P_{i,f} c._{t-1}
            for (const auto& [goff, P] :
                 {std::pair<int64_t, const S*>{L.off_i, pi}, {L.off_f, pf}}) {
              if (goff < 0) continue;
              for (int64_t j = 0; j < nb; ++j) {
                S s = 0;
                for (int64_t k = 0; k < cpb; ++k) s += P[j * cpb + k] * cp[j * cpb + k];
                a[goff + j] += s;
              }
            }
          }
          for (int64_t d = 0; d < H; ++d) {
            const int64_t j = cpb == 1 ? d : d / cpb;
            S v = IG[d] * a[d];
            if (cp != nullptr) v += FC != nullptr ? cp[d] * FC[d] : cp[d];
            if (KI != nullptr) v += KI[d] * a[L.off_i + j];
            if (KF != nullptr) v += KF[d] * a[L.off_f + j];
            dc[d] = v;
          }
          if (KO != nullptr && peep_open) {  // P_o c._t
            for (int64_t j = 0; j < nb; ++j) {
              S s = 0;
              for (int64_t k = 0; k < cpb; ++k) s += po[j * cpb + k] * dc[j * cpb + k];
              a[L.off_o + j] += s;
            }
          }
          for (int64_t d = 0; d < H; ++d) {
            S v = dc[d] * OH[d];
            if (KO != nullptr) v += KO[d] * a[L.off_o + (cpb == 1 ? d : d / cpb)];
            yh[d] = v;
          }
          if (fgr) {  // q._t = alpha sigma'(.) a_gates
            const S* SAr = sa + (off + b) * G;
            for (int64_t g = 0; g < G; ++g) q[b * G + g] = a[H + g] * SAr[g];
          }
        }
      });
      if (proj) {  // y._t = EP_t + W_p yhat._t
        S* yt = dy0 + t * B * Hr;
        std::memcpy(yt, ep + r * B * Hr, sizeof(S) * n * Hr);
        gemm_rows<S>(n, Hr, H, dyh0, H, Wpt_, Hr, S(1), yt, Hr);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstmlab_native, m) {
  m.def(
      "rop_rows_chunk(Tensor(a!) E, Tensor OHp, Tensor IGp, Tensor? Fc, Tensor SA, Tensor? Ki, "
      "Tensor? Kf, Tensor? Ko, Tensor R, Tensor? Q, Tensor? Wp, Tensor? EP, Tensor? Pi, "
      "Tensor? Pf, Tensor? Po, Tensor? dh0, Tensor? dc0, Tensor(b!) dY, Tensor(c!) dC, "
      "Tensor(d!)? dq, Tensor(e!)? dyh_buf, int t0, int[] batch_sizes, int[] cfg, bool fold, "
      "Tensor? MX=None, Tensor? Wmh=None) -> ()");
}

TORCH_LIBRARY_IMPL(lstmlab_native, CPU, m) { m.impl("rop_rows_chunk", &rop_rows_chunk); }
