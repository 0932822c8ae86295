// The R-forward pass of the bptt engine's feature-major layout (lstmlab/engines/rop.py) in C++.
//
// Hand-written: curvature products are this project's subject. The twin of rop_rows.cpp with
// step t as (features, B): the Python side (rop) forms, per chunk of steps, the part of every
// pre-activation tangent that does not depend on the carried tangents (E) and the backward's
// derivative factors (gates.FactorChunks, (k, ., B)); this file runs the chunk's steps. The
// samples never meet, so each thread takes a slice of columns through all the chunk's steps
// (at::parallel_for outside the step loop). Per step, on the columns alive (tangents written a
// dot below, gates broadcast over the cells of their block; each row w contiguous samples):
//   a_t   = E_t + R y._{t-1}  (+ Q q._{t-1} on the gate rows; + P_{i,f} c._{t-1} unless folded;
//           mLSTM: R (mx_t * W_mh y._{t-1}) in place of R y._{t-1})
//   c._t  = F_c c._{t-1} + IGp a_z + K_i a_i + K_f a_f
//   a_o  += P_o c._t (unless folded);   yhat._t = OHp c._t + K_o a_o
//   y._t  = EP_t + W_p yhat._t (projection) or yhat._t;   q._t = SA a_gates (full gate recurrence)

#include <torch/library.h>

#include "rows_common.h"

namespace {

using namespace lstmlab_native;

constexpr int64_t FM_GRAIN = 64;  // columns per task (each task runs all the chunk's steps)

// a (K x N) step operand handed in as a (T, K, B)-shaped view: feature-major rows (unit column
// stride, ld = stride(1)) or the transposed view of batch-major storage (unit feature stride,
// read as a transposed operand with ld = stride(2)); step t, first column b0
struct StepOperand {
  int64_t s0 = 0, ld = 0, col = 0;
  bool trans = false;
  StepOperand() = default;
  explicit StepOperand(const at::Tensor& v) {
    TORCH_CHECK(v.dim() == 3, "lstmlab native R-forward (feature-major): a (T, K, B) tape tensor");
    s0 = v.stride(0);
    if (v.stride(2) == 1) {
      ld = std::max<int64_t>(v.stride(1), 1), col = 1, trans = false;
    } else {
      TORCH_CHECK(v.stride(1) == 1 || v.size(1) == 1,
                  "lstmlab native R-forward (feature-major): a tape tensor must be feature-major "
                  "or the transposed view of a batch-major one");
      ld = v.stride(2), col = v.stride(2), trans = true;
    }
  }
  template <typename T>
  const T* at(const T* base, int64_t t, int64_t b0) const { return base + t * s0 + b0 * col; }
};

// the factor rows of one step (each (rows, ., B) tensor at its step and first column)
template <typename T>
struct StepFactors {
  const T *oh, *ig, *fc, *ki, *kf, *ko, *sa;
};

// one step's elementwise pass on w columns: a (D rows), cp = c._{t-1} (or null), dc = c._t,
// yh (H rows), q (G rows, or null); every row with leading dimension ld
template <typename T>
__attribute__((always_inline)) inline void rop_fm_cells_impl(
    const Layout& L, int64_t w, int64_t ld, bool peep_open, T* a, const T* cp, T* dc, T* yh,
    T* q, const StepFactors<T>& f, const T* Pi, const T* Pf, const T* Po) {
  const int64_t H = L.H, cpb = L.cpb, nb = L.nb, G = L.G;
  if (cp != nullptr && peep_open) {  // P_{i,f} c._{t-1}
    for (const auto& [goff, P] : {std::pair<int64_t, const T*>{L.off_i, Pi}, {L.off_f, Pf}}) {
      if (goff < 0) continue;
      for (int64_t j = 0; j < nb; ++j) {
        T* __restrict__ ar = a + (goff + j) * ld;
        for (int64_t k = 0; k < cpb; ++k) {
          const T p = P[j * cpb + k];
          const T* __restrict__ c = cp + (j * cpb + k) * ld;
          for (int64_t x = 0; x < w; ++x) ar[x] += p * c[x];
        }
      }
    }
  }
  for (int64_t d = 0; d < H; ++d) {
    const int64_t j = d / cpb;
    const T* __restrict__ az = a + d * ld;
    const T* __restrict__ ig = f.ig + d * ld;
    T* __restrict__ v = dc + d * ld;
    for (int64_t x = 0; x < w; ++x) v[x] = ig[x] * az[x];
    if (cp != nullptr) {
      const T* __restrict__ c = cp + d * ld;
      if (f.fc != nullptr) {
        const T* __restrict__ fc = f.fc + d * ld;
        for (int64_t x = 0; x < w; ++x) v[x] += c[x] * fc[x];
      } else {
        for (int64_t x = 0; x < w; ++x) v[x] += c[x];
      }
    }
    if (f.ki != nullptr) {
      const T* __restrict__ k = f.ki + d * ld;
      const T* __restrict__ ai = a + (L.off_i + j) * ld;
      for (int64_t x = 0; x < w; ++x) v[x] += k[x] * ai[x];
    }
    if (f.kf != nullptr) {
      const T* __restrict__ k = f.kf + d * ld;
      const T* __restrict__ af = a + (L.off_f + j) * ld;
      for (int64_t x = 0; x < w; ++x) v[x] += k[x] * af[x];
    }
  }
  if (f.ko != nullptr && peep_open) {  // P_o c._t
    for (int64_t j = 0; j < nb; ++j) {
      T* __restrict__ ao = a + (L.off_o + j) * ld;
      for (int64_t k = 0; k < cpb; ++k) {
        const T p = Po[j * cpb + k];
        const T* __restrict__ c = dc + (j * cpb + k) * ld;
        for (int64_t x = 0; x < w; ++x) ao[x] += p * c[x];
      }
    }
  }
  for (int64_t d = 0; d < H; ++d) {
    const T* __restrict__ v = dc + d * ld;
    const T* __restrict__ oh = f.oh + d * ld;
    T* __restrict__ y = yh + d * ld;
    if (f.ko != nullptr) {
      const T* __restrict__ k = f.ko + d * ld;
      const T* __restrict__ ao = a + (L.off_o + d / cpb) * ld;
      for (int64_t x = 0; x < w; ++x) y[x] = v[x] * oh[x] + k[x] * ao[x];
    } else {
      for (int64_t x = 0; x < w; ++x) y[x] = v[x] * oh[x];
    }
  }
  if (q != nullptr) {  // q._t = alpha sigma'(.) a_gates
    for (int64_t g = 0; g < G; ++g) {
      const T* __restrict__ ag = a + (H + g) * ld;
      const T* __restrict__ s = f.sa + g * ld;
      T* __restrict__ qg = q + g * ld;
      for (int64_t x = 0; x < w; ++x) qg[x] = ag[x] * s[x];
    }
  }
}

#define LSTMLAB_ROP_FM(T)                                                                       \
  LSTMLAB_CLONES void rop_fm_cells(const Layout& L, int64_t w, int64_t ld, bool peep_open, T* a, \
                                   const T* cp, T* dc, T* yh, T* q, const StepFactors<T>& f,    \
                                   const T* Pi, const T* Pf, const T* Po) {                     \
    rop_fm_cells_impl<T>(L, w, ld, peep_open, a, cp, dc, yh, q, f, Pi, Pf, Po);                 \
  }
LSTMLAB_ROP_FM(float)
LSTMLAB_ROP_FM(double)
#undef LSTMLAB_ROP_FM

void rop_features_chunk(at::Tensor E, const at::Tensor& OHp, const at::Tensor& IGp,
                        const c10::optional<at::Tensor>& Fc, const at::Tensor& SA,
                        const c10::optional<at::Tensor>& Ki, const c10::optional<at::Tensor>& Kf,
                        const c10::optional<at::Tensor>& Ko, const at::Tensor& R_,
                        const c10::optional<at::Tensor>& Q_, const c10::optional<at::Tensor>& Wp_,
                        const c10::optional<at::Tensor>& EP, const c10::optional<at::Tensor>& Pi,
                        const c10::optional<at::Tensor>& Pf, const c10::optional<at::Tensor>& Po,
                        const c10::optional<at::Tensor>& dh0, const c10::optional<at::Tensor>& dc0,
                        at::Tensor dY, at::Tensor dC, const c10::optional<at::Tensor>& dq,
                        const c10::optional<at::Tensor>& dyh_buf, int64_t t0,
                        at::IntArrayRef batch_sizes, at::IntArrayRef cfg, bool fold,
                        const c10::optional<at::Tensor>& MX, const c10::optional<at::Tensor>& Wmh_,
                        const c10::optional<at::Tensor>& dW_, const c10::optional<at::Tensor>& db_,
                        const c10::optional<at::Tensor>& dR_, const c10::optional<at::Tensor>& dQ_,
                        const c10::optional<at::Tensor>& dPi_,
                        const c10::optional<at::Tensor>& dPf_,
                        const c10::optional<at::Tensor>& dPo_, const c10::optional<at::Tensor>& tx,
                        const c10::optional<at::Tensor>& tY, const c10::optional<at::Tensor>& th0,
                        const c10::optional<at::Tensor>& tA, const c10::optional<at::Tensor>& tC,
                        const c10::optional<at::Tensor>& tc0, bool fused) {
  // fused: E is one step's scratch (1, D, B), and each step's carried-independent terms
  //   dW x_t + db + dR y_{t-1} (+ dQ q_{t-1} on the gate rows, dP_{i,f} c_{t-1}, dP_o c_t)
  // are formed here from the tape (x, Y, h0, the gate activations A, C, c0), per step and
  // slice of columns while they are in the cache, instead of a pass per term over the whole
  // chunk in Python (no mLSTM, no input tangent: those keep the Python terms)
  const Layout L(cfg);
  L.engine_order();
  TORCH_CHECK(E.dim() == 3, "lstmlab native R-forward (feature-major): E must be (k, D, B)");
  // the chunk's steps: E holds each one's terms, or (fused) is one step's scratch
  const int64_t m = int64_t(batch_sizes.size()), D = E.size(1), B = E.size(2), H = L.H, G = L.G;
  const int64_t Hr = dY.size(1), T = dY.size(0);
  TORCH_CHECK(D == L.D, "lstmlab native R-forward (feature-major): E has ", D, " rows, expected ",
              L.D);
  TORCH_CHECK((E.size(0) == m || (fused && E.size(0) == 1)) && t0 >= 0 && t0 + m <= T,
              "lstmlab native R-forward (feature-major): batch sizes and steps");
  TORCH_CHECK(dY.dim() == 3 && dY.size(2) == B && dC.dim() == 3 && dC.size(0) == T &&
                  dC.size(1) == H && dC.size(2) == B,
              "lstmlab native R-forward (feature-major): dY (T, Hr, B) and dC (T, H, B)");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&E, &OHp, &IGp, &SA, &dY,
                                                                      &dC})
    TORCH_CHECK(t->is_contiguous(), "lstmlab native R-forward: tensors must be contiguous");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&OHp, &IGp})
    TORCH_CHECK(t->dim() == 3 && t->size(0) >= m && t->size(1) == H && t->size(2) == B,
                "lstmlab native R-forward (feature-major): factors must be (k, H, B)");
  for (const c10::optional<at::Tensor>* t : {&Fc, &Ki, &Kf, &Ko})
    TORCH_CHECK(!(t->has_value() && (*t)->defined()) ||
                    ((*t)->is_contiguous() && (*t)->sizes() == OHp.sizes()),
                "lstmlab native R-forward (feature-major): factors must be (k, H, B)");
  TORCH_CHECK(SA.dim() == 3 && SA.size(1) == G && SA.size(2) == B && SA.size(0) >= m,
              "lstmlab native R-forward (feature-major): SA must be (k, G, B)");
  const bool fgr = Q_.has_value() && Q_->defined();
  const bool proj = Wp_.has_value() && Wp_->defined();
  const bool mult = Wmh_.has_value() && Wmh_->defined();
  const int64_t M = mult ? Wmh_->size(0) : 0;
  const int64_t Kr = mult ? M : Hr;
  TORCH_CHECK(R_.dim() == 2 && R_.size(0) == D && R_.size(1) == Kr,
              "lstmlab native R-forward (feature-major): R must be (", D, ", ", Kr, ")");
  TORCH_CHECK(!fgr || (dq.has_value() && dq->is_contiguous() && dq->size(0) == G &&
                       dq->size(1) == B),
              "lstmlab native R-forward (feature-major): dq must be (G, B)");
  TORCH_CHECK(!proj || (EP.has_value() && EP->is_contiguous() && EP->size(1) == Hr &&
                        dyh_buf.has_value() && dyh_buf->is_contiguous() &&
                        dyh_buf->size(0) == H && dyh_buf->size(1) == B && Wp_->size(0) == Hr &&
                        Wp_->size(1) == H),
              "lstmlab native R-forward (feature-major): W_p (Hr, H), EP and the y_hat buffer");
  TORCH_CHECK(proj || Hr == H, "lstmlab native R-forward (feature-major): dY must have H rows");
  TORCH_CHECK(!mult || (MX.has_value() && MX->is_contiguous() && MX->size(1) == M &&
                        MX->size(2) == B && Wmh_->size(1) == Hr),
              "lstmlab native R-forward (feature-major): mLSTM's W_mx x (T, M, B), W_mh (M, Hr)");
  for (int64_t r = 0; r < m; ++r)
    TORCH_CHECK(batch_sizes[r] >= 0 && batch_sizes[r] <= B,
                "lstmlab native R-forward (feature-major): batch sizes must be at most B");
  const bool peep_open = L.peep && !fold;  // peepholes not folded into F_c and OHp
  const at::Tensor R = R_.contiguous();
  const at::Tensor Q = fgr ? Q_->contiguous() : at::Tensor();
  const at::Tensor Wp = proj ? Wp_->contiguous() : at::Tensor();
  const at::Tensor Wmh = mult ? Wmh_->contiguous() : at::Tensor();
  const at::Tensor h0 = dh0.has_value() && dh0->defined() ? dh0->contiguous() : at::Tensor();
  const at::Tensor c0 = dc0.has_value() && dc0->defined() ? dc0->contiguous() : at::Tensor();
  TORCH_CHECK(!h0.defined() || (h0.dim() == 2 && h0.size(0) == Hr && h0.size(1) == B),
              "lstmlab native R-forward (feature-major): dh0 must be (Hr, B)");
  TORCH_CHECK(!c0.defined() || (c0.dim() == 2 && c0.size(0) == H && c0.size(1) == B),
              "lstmlab native R-forward (feature-major): dc0 must be (H, B)");
  at::Tensor v_buf = mult ? at::empty({M, B}, E.options()) : at::Tensor();
  auto opt = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
  };
  const at::Tensor dW = opt(dW_), db = opt(db_), dR = opt(dR_), dQ = opt(dQ_);
  const at::Tensor dPi = opt(dPi_), dPf = opt(dPf_), dPo = opt(dPo_);
  TORCH_CHECK(!fused || (!mult && E.size(0) == 1 && tx.has_value() && tY.has_value() &&
                         th0.has_value() && tA.has_value() && tC.has_value() &&
                         tc0.has_value()),
              "lstmlab native R-forward (feature-major): the fused terms need the tape (x, Y, "
              "h0, A, C, c0), a one-step E and no mLSTM");
  const int64_t I = fused ? tx->size(1) : 0;
  if (fused) {
    TORCH_CHECK(tx->size(0) == T && tx->size(2) == B && tY->size(0) == T && tY->size(1) == Hr &&
                    tY->size(2) == B && tA->size(0) == T && tA->size(1) == G &&
                    tA->size(2) == B && tC->is_contiguous() && tC->size(0) == T &&
                    tC->size(1) == H && tC->size(2) == B && th0->size(0) == Hr &&
                    th0->size(1) == B && tc0->size(0) == H && tc0->size(1) == B,
                "lstmlab native R-forward (feature-major): the tape's shapes");
    TORCH_CHECK(!dW.defined() || (dW.size(0) == D && dW.size(1) == I), "dW must be (D, I)");
    TORCH_CHECK(!db.defined() || db.numel() == D, "db must have D entries");
    TORCH_CHECK(!dR.defined() || (dR.size(0) == D && dR.size(1) == Hr), "dR must be (D, Hr)");
    TORCH_CHECK(!dQ.defined() || (dQ.size(0) == G && dQ.size(1) == G), "dQ must be (G, G)");
    for (const at::Tensor* p : {&dPi, &dPf, &dPo})
      TORCH_CHECK(!p->defined() || p->numel() == H, "a peephole tangent must have H entries");
  }
  const StepOperand ox = fused ? StepOperand(*tx) : StepOperand();
  const StepOperand oy = fused ? StepOperand(*tY) : StepOperand();
  const StepOperand oa = fused ? StepOperand(*tA) : StepOperand();
  const StepOperand oh0 = fused ? StepOperand(th0->unsqueeze(0)) : StepOperand();
  const at::Tensor tc0c = fused ? tc0->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(E.scalar_type(), "lstmlab_rop_features", [&] {
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
    const S* ep = proj ? EP->data_ptr<S>() : nullptr;
    const S* R0 = R.data_ptr<S>();
    const S* Q0 = fgr ? Q.data_ptr<S>() : nullptr;
    const S* Wp0 = proj ? Wp.data_ptr<S>() : nullptr;
    const S* Wmh0 = mult ? Wmh.data_ptr<S>() : nullptr;
    const S* mx = mult ? MX->data_ptr<S>() : nullptr;
    const S* h0_ = h0.defined() ? h0.data_ptr<S>() : nullptr;
    const S* c0_ = c0.defined() ? c0.data_ptr<S>() : nullptr;
    S* dy0 = dY.data_ptr<S>();
    S* dc0p = dC.data_ptr<S>();
    S* q0 = fgr ? dq->data_ptr<S>() : nullptr;
    S* dyh0 = proj ? dyh_buf->data_ptr<S>() : nullptr;
    S* v0 = mult ? v_buf.data_ptr<S>() : nullptr;
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<S>() : nullptr; };
    const S *dW_p = ptr(dW), *db_p = ptr(db), *dR_p = ptr(dR), *dQ_p = ptr(dQ);
    const S *dPi_p = ptr(dPi), *dPf_p = ptr(dPf), *dPo_p = ptr(dPo);
    const S* tx_p = fused ? tx->data_ptr<S>() : nullptr;
    const S* tY_p = fused ? tY->data_ptr<S>() : nullptr;
    const S* th0_p = fused ? th0->data_ptr<S>() : nullptr;
    const S* tA_p = fused ? tA->data_ptr<S>() : nullptr;
    const S* tC_p = fused ? tC->data_ptr<S>() : nullptr;
    const S* tc0_p = fused ? tc0c.data_ptr<S>() : nullptr;
    at::parallel_for(0, B, FM_GRAIN, [&](int64_t b0, int64_t b1) {
      for (int64_t r = 0; r < m; ++r) {
        const int64_t t = t0 + r;
        const int64_t w = std::min(b1, batch_sizes[r]) - b0;  // this task's columns alive
        if (w <= 0) break;
        // the tangents of step t-1 (none at step 0 unless the initial state has one)
        const S* y_prev = t > 0 ? dy0 + (t - 1) * Hr * B : h0_;
        const S* c_prev = t > 0 ? dc0p + (t - 1) * H * B : c0_;
        if (y_prev != nullptr) y_prev += b0;
        if (c_prev != nullptr) c_prev += b0;
        S* a = e + (fused ? 0 : r * D * B) + b0;
        if (fused) {  // the carried-independent terms, from the tape
          if (dW_p != nullptr) {
            gemm_rows<S>(D, w, I, dW_p, I, ox.at(tx_p, t, b0), ox.ld, S(0), a, B, ox.trans);
          } else {
            for (int64_t d = 0; d < D; ++d) std::fill(a + d * B, a + d * B + w, S(0));
          }
          if (db_p != nullptr)
            for (int64_t d = 0; d < D; ++d) {
              S* ar = a + d * B;
              const S bd = db_p[d];
              for (int64_t x = 0; x < w; ++x) ar[x] += bd;
            }
          if (dR_p != nullptr) {
            const S* yp = t > 0 ? oy.at(tY_p, t - 1, b0) : oh0.at(th0_p, 0, b0);
            gemm_rows<S>(D, w, Hr, dR_p, Hr, yp, t > 0 ? oy.ld : oh0.ld, S(1), a, B,
                         t > 0 ? oy.trans : oh0.trans);
          }
          if (dQ_p != nullptr && t > 0)  // q_{-1} = 0
            gemm_rows<S>(G, w, G, dQ_p, G, oa.at(tA_p, t - 1, b0), oa.ld, S(1), a + H * B, B,
                         oa.trans);
          // dP_{i,f} c_{t-1}, dP_o c_t on the gate rows
          const S* ctp = (t > 0 ? tC_p + (t - 1) * H * B : tc0_p) + b0;
          const S* ct = tC_p + t * H * B + b0;
          for (const auto& [goff, P, cs] : {std::tuple<int64_t, const S*, const S*>{
                                                L.off_i, dPi_p, ctp},
                                            {L.off_f, dPf_p, ctp}, {L.off_o, dPo_p, ct}}) {
            if (goff < 0 || P == nullptr) continue;
            for (int64_t j = 0; j < L.nb; ++j) {
              S* ar = a + (goff + j) * B;
              for (int64_t k = 0; k < L.cpb; ++k) {
                const S p = P[j * L.cpb + k];
                const S* cr = cs + (j * L.cpb + k) * B;
                for (int64_t x = 0; x < w; ++x) ar[x] += p * cr[x];
              }
            }
          }
        }
        if (y_prev != nullptr && mult) {  // v = mx_t * (W_mh y._{t-1}), a += R v
          S* v = v0 + b0;
          gemm_rows<S>(M, w, Hr, Wmh0, Hr, y_prev, B, S(0), v, B);
          const S* mx_t = mx + t * M * B + b0;
          for (int64_t k = 0; k < M; ++k)
            for (int64_t x = 0; x < w; ++x) v[k * B + x] *= mx_t[k * B + x];
          gemm_rows<S>(D, w, M, R0, M, v, B, S(1), a, B);
        } else if (y_prev != nullptr) {
          gemm_rows<S>(D, w, Hr, R0, Hr, y_prev, B, S(1), a, B);
        }
        S* q = fgr ? q0 + b0 : nullptr;
        if (fgr && t > 0) gemm_rows<S>(G, w, G, Q0, G, q, B, S(1), a + H * B, B);
        const int64_t fo = r * H * B + b0;  // this step's first column in the (k, H, B) factors
        const StepFactors<S> f{ohp + fo,
                               igp + fo,
                               fc != nullptr ? fc + fo : nullptr,
                               ki != nullptr ? ki + fo : nullptr,
                               kf != nullptr ? kf + fo : nullptr,
                               ko != nullptr ? ko + fo : nullptr,
                               sa + r * G * B + b0};
        S* dc = dc0p + t * H * B + b0;
        S* yh = proj ? dyh0 + b0 : dy0 + t * Hr * B + b0;
        rop_fm_cells(L, w, B, peep_open, a, c_prev, dc, yh, q, f, pi, pf, po);
        if (proj) {  // y._t = EP_t + W_p yhat._t
          S* yt = dy0 + t * Hr * B + b0;
          for (int64_t k = 0; k < Hr; ++k)
            std::memcpy(yt + k * B, ep + (r * Hr + k) * B + b0, sizeof(S) * w);
          gemm_rows<S>(Hr, w, H, Wp0, H, yh, B, S(1), yt, B);
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstmlab_native, m) {
  m.def(
      "rop_features_chunk(Tensor(a!) E, Tensor OHp, Tensor IGp, Tensor? Fc, Tensor SA, "
      "Tensor? Ki, Tensor? Kf, Tensor? Ko, Tensor R, Tensor? Q, Tensor? Wp, Tensor? EP, "
      "Tensor? Pi, Tensor? Pf, Tensor? Po, Tensor? dh0, Tensor? dc0, Tensor(b!) dY, "
      "Tensor(c!) dC, Tensor(d!)? dq, Tensor(e!)? dyh_buf, int t0, int[] batch_sizes, int[] cfg, "
      "bool fold, Tensor? MX=None, Tensor? Wmh=None, Tensor? dW=None, Tensor? db=None, "
      "Tensor? dR=None, Tensor? dQ=None, Tensor? dPi=None, Tensor? dPf=None, Tensor? dPo=None, "
      "Tensor? tx=None, Tensor? tY=None, Tensor? th0=None, Tensor? tA=None, Tensor? tC=None, "
      "Tensor? tc0=None, bool fused=False) -> ()");
}

TORCH_LIBRARY_IMPL(lstmlab_native, CPU, m) {
  m.impl("rop_features_chunk", &rop_features_chunk);
}
