// Shared by the native core's loops (lstm_rows.cpp: forward and backward; rop_rows.cpp: the
// R-forward pass): the layout of the pre-activations, the vectorisable sigmoid, the products.
// Hand-written: the engine is this project's subject.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>  // the float32 common-cell passes (below)
#endif

namespace lstmlab_native {
namespace {  // each source file gets its own copy (the target_clones functions too)

// activation codes shared with lstmlab/engines/native/__init__.py
enum Act : int64_t { IDENTITY = 0, TANH = 1, BIPOLAR1 = 2, BIPOLAR2 = 3 };

// config layout shared with lstmlab/engines/native/__init__.py
enum Cfg : int64_t {
  C_H = 0, C_CPB, C_HAS_I, C_HAS_F, C_HAS_O, C_COUPLED, C_PEEP, C_G, C_H_ACT, C_CHUNK, C_ZS,
  C_ORDER, C_LEN
};

// sigmoid form of the tanh family: f(a) = k sigma(s a) - k/2, as (s, k)
inline double act_s(int64_t a) { return a == TANH ? 2.0 : 1.0; }
inline double act_k(int64_t a) { return a == BIPOLAR2 ? 4.0 : 2.0; }

template <typename T>
inline T sigmoid(T a) {
  return T(1) / (T(1) + std::exp(-a));
}

// ---- a vectorisable exp, for the elementwise passes: exp(x) = 2^n e^r, n = round(x / ln 2),
// r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in two so that n ln2_hi is exact), e^r by its
// Taylor series (float: to r^7, double: to r^13; the first term left out is below half an
// ulp), 2^n built in the exponent bits. No calls and no branches, so that the compiler
// vectorises the loops below; each is compiled for AVX-512, AVX2 and the baseline and picked
// at load time (target_clones), so the library runs on any x86-64.
__attribute__((always_inline)) inline float exp_poly(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t ti, mi;
  std::memcpy(&ti, &t, 4);
  std::memcpy(&mi, &magic, 4);
  const int32_t e = (ti - mi + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return p * scale;
}

__attribute__((always_inline)) inline double exp_poly(double x) {
  x = std::min(std::max(x, -708.0), 709.0);
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double t = x * 1.4426950408889634074 + magic;
  const double n = t - magic;
  const double r = (x - n * 0.693147180369123816490) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t ti, mi;
  std::memcpy(&ti, &t, 8);
  std::memcpy(&mi, &magic, 8);
  const int64_t e = (ti - mi + 1023) << 52;
  double scale;
  std::memcpy(&scale, &e, 8);
  return p * scale;
}

// out[d] = k sigma(s in[d]) + off for d < len (in and out may be the same array)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTMLAB_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else  // elsewhere one build, vectorised for the compiler's default target
#define LSTMLAB_CLONES
#endif
#define LSTMLAB_SIGMOID_AFFINE(T)                                                            \
  LSTMLAB_CLONES void sigmoid_affine(                                                          \
      const T* in, T* out, int64_t len, T s, T k, T off) {                                     \
    for (int64_t d = 0; d < len; ++d) out[d] = off + k / (T(1) + exp_poly(-(s * in[d])));    \
  }
LSTMLAB_SIGMOID_AFFINE(float)
LSTMLAB_SIGMOID_AFFINE(double)
#undef LSTMLAB_SIGMOID_AFFINE

// f'(x) from y = f(x), times w: tanh w (1 - y^2), bipolar1 w (1 - y^2)/2, bipolar2 w (1 - y^2/4)
template <typename T>
inline T times_derivative(int64_t act, T w, T y) {
  switch (act) {
    case TANH: return w - (w * y) * y;
    case BIPOLAR1: return (w - (w * y) * y) * T(0.5);
    case BIPOLAR2: return w - T(0.25) * (w * y) * y;
    default: return w;
  }
}

struct Layout {
  int64_t H, cpb, nb, D, G;
  bool has_i, has_f, has_o, coupled, peep;
  int64_t g_act, h_act;
  // the block input's argument scale that the forward step applies to the summed
  // pre-activation (1: the weights carry it already, see gates.forward_weights)
  int64_t zs;
  // the order of the pre-activation rows: 0 the engine's [z | i | f | o], 1 torch's
  // [i | f | z | o] (the common cell's batch-major forward and backward only: torch.nn.LSTM's
  // weights read in place, no gathered copy per call)
  int64_t order;
  int64_t off_i = -1, off_f = -1, off_o = -1;  // gate rows in the pre-activations (D)

  explicit Layout(at::IntArrayRef cfg) {
    TORCH_CHECK(cfg.size() == C_LEN, "lstmlab native core: config of ", cfg.size(),
                " entries, expected ", int64_t(C_LEN));
    H = cfg[C_H];
    cpb = cfg[C_CPB];
    nb = H / cpb;
    has_i = cfg[C_HAS_I];
    has_f = cfg[C_HAS_F];
    has_o = cfg[C_HAS_O];
    coupled = cfg[C_COUPLED];
    peep = cfg[C_PEEP];
    g_act = cfg[C_G];
    h_act = cfg[C_H_ACT];
    zs = cfg[C_ZS];
    TORCH_CHECK(zs == 1 || zs == 2, "lstmlab native core: block-input scale ", zs);
    order = cfg[C_ORDER];
    TORCH_CHECK(order == 0 || order == 1, "lstmlab native core: gate order ", order);
    int64_t off = H;
    if (has_i) { off_i = off; off += nb; }
    if (has_f) { off_f = off; off += nb; }
    if (has_o) { off_o = off; off += nb; }
    D = off;
    G = D - H;
  }
  // rows [lo, hi) of the pre-activations that one sigmoid pass covers right after the products
  int64_t sig_lo() const { return g_act == IDENTITY ? H : 0; }
  int64_t sig_hi() const { return (peep && has_o) ? off_o : D; }
  // the common cell, run by common_step: cpb = 1, i, f and o gates, no peepholes, not coupled,
  // squashing block input and cell output activations
  bool common() const { return common_cell() && !peep; }
  // where the block input's rows start: 0, or 2 H in torch's order
  int64_t zo() const { return order == 1 ? 2 * H : 0; }
  // the loops that read the engine's order only
  void engine_order() const {
    TORCH_CHECK(order == 0, "lstmlab native core: torch's gate order is for the batch-major "
                "loops of the common cell only");
  }
  // the same cell with peepholes (vanilla, the family's default), run by peep_step; the two are
  // what lstmlab.engines.layout.common_cell names
  bool common_peep() const { return common_cell() && peep; }
  bool common_cell() const {
    return cpb == 1 && has_i && has_f && has_o && !coupled && g_act != IDENTITY &&
           h_act != IDENTITY;
  }
};

// an optional tensor argument of an operator: given (and defined), and its data or null
inline bool given(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

template <typename T>
inline const T* opt_ptr(const c10::optional<at::Tensor>& t) {
  return given(t) ? t->data_ptr<T>() : nullptr;
}

// rows per task of at::parallel_for: about 8k elements, so small batches stay on one thread
inline int64_t grain(int64_t per_row) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, per_row)); }

// ------------------------------------------------------------------------- the products
// The BLAS that torch itself links (MKL in the x86 wheels) exports the Fortran gemm; calling it
// on raw pointers costs no tensor objects and no dispatch per step. The symbols are weak: a
// torch built without them leaves them null, and the products then go through at::addmm_out
// on views (the same numbers, a little more overhead per step).
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
// MKL's packed single-precision gemm: the right operand (a weight, the same for every step)
// packed once per call instead of inside every product. Weak too: absent, products use sgemm.
size_t cblas_sgemm_pack_get_size(int, int, int, int) __attribute__((weak));
void cblas_sgemm_pack(int, int, int, int, int, int, float, const float*, int, float*)
    __attribute__((weak));
void cblas_sgemm_compute(int, int, int, int, int, int, const float*, int, const float*, int,
                         float, float*, int) __attribute__((weak));
// MKL's thread count for the calling thread's next calls (C interface: an int, returns the
// previous setting, 0 = follow the global one). Weak: absent, MKL keeps its own choice.
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
}

// A step's product below this many flops runs on one thread: MKL spreading a 64 x 32 x 128
// product over two threads took ~8 us a step more than one thread (the fork and join cost
// more than the product), and 100 such steps made a two-thread call 1.6x slower than one
// thread. The larger products of wide layers keep MKL's threads. LSTMLAB_SERIAL_FLOPS (read
// once) overrides the bound for measurements.
inline double serial_flops() {
  static const double bound = [] {
    const char* env = std::getenv("LSTMLAB_SERIAL_FLOPS");
    return env != nullptr ? std::atof(env) : 2e6;
  }();
  return bound;
}

// RAII: MKL on one thread for this thread's products in scope (``when``: a thread that runs its
// own slice of the batch, always)
struct OneMklThread {
  int prev = -1;
  explicit OneMklThread(bool when = true) {
    if (when && MKL_Set_Num_Threads_Local != nullptr) prev = MKL_Set_Num_Threads_Local(1);
  }
  ~OneMklThread() {
    if (prev >= 0) MKL_Set_Num_Threads_Local(prev);
  }
  OneMklThread(const OneMklThread&) = delete;
  OneMklThread& operator=(const OneMklThread&) = delete;
};

// ... when the product is small and torch runs more than one thread
struct SerialIfSmall : OneMklThread {
  explicit SerialIfSmall(double flops)
      : OneMklThread(flops < serial_flops() && at::get_num_threads() > 1) {}
};

inline bool fits_int(int64_t v) { return v <= static_cast<int64_t>(INT32_MAX); }

// row-major C (m x N, ld ldc) = op(A) op(B) + beta C, where B is stored row-major as (K x N,
// ld ldb), or, with transB, as its transpose (N x K, ld ldb): a weight (out, in) as it is kept,
// used without copying it into (in, out) first; likewise A as (m x K, ld lda), or with transA
// as (K x m, ld lda) (the feature-major loop's transposed weights, lstm_features.cpp)
template <typename T>
void gemm_rows(int64_t m, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc, bool transB = false,
               bool transA = false) {
  if (m == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < N; ++j) C[r * ldc + j] = beta == T(0) ? T(0) : beta * C[r * ldc + j];
    return;
  }
  const bool blas = (std::is_same_v<T, float> ? sgemm_ != nullptr : dgemm_ != nullptr) &&
                    fits_int(m * ldc) && fits_int((transB ? N : K) * ldb) &&
                    fits_int((transA ? K : m) * lda);
  if (blas) {  // column-major: C^T (N x m) = op(B)^T (N x K) op(A)^T (K x m)
    const SerialIfSmall serial(2.0 * double(m) * double(N) * double(K));
    const int mi = int(m), Ni = int(N), Ki = int(K), la = int(lda), lb = int(ldb), lc = int(ldc);
    const T one = 1;
    const char* tb = transB ? "T" : "N";
    const char* ta = transA ? "T" : "N";
    if constexpr (std::is_same_v<T, float>) {
      sgemm_(tb, ta, &Ni, &mi, &Ki, &one, B, &lb, A, &la, &beta, C, &lc);
    } else {
      dgemm_(tb, ta, &Ni, &mi, &Ki, &one, B, &lb, A, &la, &beta, C, &lc);
    }
    return;
  }
  const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor a = transA ? at::from_blob(const_cast<T*>(A), {m, K}, {1, lda}, opt)
                        : at::from_blob(const_cast<T*>(A), {m, K}, {lda, 1}, opt);
  at::Tensor b = transB ? at::from_blob(const_cast<T*>(B), {K, N}, {1, ldb}, opt)
                        : at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, opt);
  at::Tensor c = at::from_blob(C, {m, N}, {ldc, 1}, opt);
  if (beta == T(0)) {
    at::mm_out(c, a, b);
  } else {
    c.mul_(beta).addmm_(a, b);
  }
}

// a (K x N) matrix handed in as a tensor: row-major, or the transposed view of a row-major
// (N x K) weight; its data pointer, leading dimension and which of the two
template <typename T>
struct RightOperand {
  const T* p;
  int64_t ld;
  bool trans;
  explicit RightOperand(const at::Tensor& b) {
    TORCH_CHECK(b.dim() == 2, "lstmlab native core: a weight must be 2-D");
    if (b.stride(1) == 1 && (b.stride(0) >= b.size(1) || b.size(0) <= 1)) {
      p = b.data_ptr<T>(), ld = std::max<int64_t>(b.stride(0), std::max<int64_t>(1, b.size(1))),
      trans = false;
    } else {
      TORCH_CHECK(b.stride(0) == 1 && (b.stride(1) >= b.size(0) || b.size(1) <= 1),
                  "lstmlab native core: a weight must be row-major or the transpose of one");
      p = b.data_ptr<T>(), ld = std::max<int64_t>(b.stride(1), std::max<int64_t>(1, b.size(0))),
      trans = true;
    }
  }
};

// ---- one row (batch 1): c (N) = a (K) B (K x N, row-major, ld ldb) + beta c, as K axpys over
// blocks of 64 columns held in registers. At batch 1 a BLAS call per step costs more in its
// dispatch than the product itself (the 2000-step, 64-unit row: MKL's gemv was 0.8 us a step).
#define LSTMLAB_ROW_GEMV(T)                                                                    \
  LSTMLAB_CLONES void row_gemv(const T* __restrict__ a, const T* __restrict__ B, int64_t ldb,  \
                               int64_t K, int64_t N, T beta, T* __restrict__ c) {              \
    constexpr int64_t W = 64;                                                                  \
    int64_t n0 = 0;                                                                            \
    for (; n0 + W <= N; n0 += W) {                                                             \
      T acc[W];                                                                                \
      for (int64_t j = 0; j < W; ++j) acc[j] = beta == T(0) ? T(0) : beta * c[n0 + j];         \
      for (int64_t k = 0; k < K; ++k) {                                                        \
        const T ak = a[k];                                                                     \
        const T* __restrict__ b = B + k * ldb + n0;                                            \
        for (int64_t j = 0; j < W; ++j) acc[j] += ak * b[j];                                   \
      }                                                                                        \
      for (int64_t j = 0; j < W; ++j) c[n0 + j] = acc[j];                                      \
    }                                                                                          \
    if (n0 < N) {                                                                              \
      const int64_t w = N - n0;                                                                \
      for (int64_t j = 0; j < w; ++j) c[n0 + j] = beta == T(0) ? T(0) : beta * c[n0 + j];      \
      for (int64_t k = 0; k < K; ++k) {                                                        \
        const T ak = a[k];                                                                     \
        const T* __restrict__ b = B + k * ldb + n0;                                            \
        for (int64_t j = 0; j < w; ++j) c[n0 + j] += ak * b[j];                                \
      }                                                                                        \
    }                                                                                          \
  }
LSTMLAB_ROW_GEMV(float)
LSTMLAB_ROW_GEMV(double)
#undef LSTMLAB_ROW_GEMV

// a ↦ a op(B) for the step rows a (m x K) and a weight B (K x N; row-major with ld ldb, or
// stored transposed, see gemm_rows) fixed for a whole call: float32 packs B once (MKL) for
// the products with all ``rows`` rows (``steps`` of them, min_steps at least); other products,
// float64, or a torch without MKL go through gemm_rows (MKL's packed and plain products give
// the same sums). At batch 1 (rows 1, 4 steps and more), row_gemv.
template <typename T>
struct StepProduct {
  const T* B;
  int64_t N, K, ldb, rows;
  bool transB;
  at::Tensor packed;  // bytes of the packed B, or undefined
  at::Tensor row_major;  // batch 1: B as a row-major (K x N) copy for row_gemv, or undefined

  StepProduct(const T* B_, int64_t N_, int64_t K_, int64_t ldb_, int64_t rows_, int64_t steps,
              bool transB_ = false, int64_t min_steps = 4)
      : B(B_), N(N_), K(K_), ldb(ldb_), rows(rows_), transB(transB_) {
    if (rows == 1 && steps >= 4 && K >= 1 && N >= 1) {
      const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
      at::Tensor b = transB ? at::from_blob(const_cast<T*>(B), {K, N}, {1, ldb}, opt)
                            : at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, opt);
      row_major = b.contiguous();  // a view when B is row-major already: B outlives the call
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      const bool have = cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr &&
                        cblas_sgemm_compute != nullptr;
      if (have && steps >= min_steps && rows >= 2 && N >= 16 && K >= 16 && fits_int(K * N) &&
          fits_int(rows * N)) {
        // CblasRowMajor 101, CblasBMatrix 162, CblasNoTrans 111 / CblasTrans 112
        const size_t bytes = cblas_sgemm_pack_get_size(162, int(rows), int(N), int(K));
        packed = at::empty({int64_t(bytes / sizeof(float)) + 16}, at::kFloat);
        cblas_sgemm_pack(101, 162, transB ? 112 : 111, int(rows), int(N), int(K), 1.0f, B,
                         int(ldb), packed.data_ptr<float>());
      }
    }
  }

  // C (m x N, ld ldc) = A op(B) + beta C
  void operator()(int64_t m, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    if (row_major.defined() && m == 1) {
      row_gemv(A, row_major.data_ptr<T>(), N, K, N, beta, C);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (packed.defined() && m == rows && fits_int(m * lda) && fits_int(m * ldc)) {
        // CblasPacked 151 for the packed B
        const SerialIfSmall serial(2.0 * double(m) * double(N) * double(K));
        cblas_sgemm_compute(101, 111, 151, int(m), int(N), int(K), A, int(lda),
                            packed.data_ptr<float>(), int(N), beta, C, int(ldc));
        return;
      }
    }
    gemm_rows<T>(m, N, K, A, lda, B, ldb, beta, C, ldc, transB);
  }
};

// ---- the step of the common cell: one block per cell (cpb = 1), input, forget and output
// gates, no peepholes, not coupled, squashing g and h. Two vectorised passes over a row:
// the bias added and the four activations taken in place (pre = [a_z | a_i | a_f | a_o], each
// H long; written back, the backward reads them), then the cell update, h(c) and y_hat.
// (One pass doing both was 2.5x slower: five exps in flight spill the vector registers.)
#define LSTMLAB_COMMON_STEP(T)                                                                 \
  LSTMLAB_CLONES void sigmoid_affine_bias(T* __restrict__ a, const T* __restrict__ b,          \
                                          int64_t len, T s, T k, T off) {                      \
    for (int64_t d = 0; d < len; ++d) a[d] = off + k / (T(1) + exp_poly(-(s * (a[d] + b[d])))); \
  }                                                                                            \
  LSTMLAB_CLONES void cell_step(const T* __restrict__ z, const T* __restrict__ i,              \
                                const T* __restrict__ f, const T* __restrict__ o,              \
                                const T* __restrict__ cp, T* __restrict__ c,                   \
                                T* __restrict__ hc, T* __restrict__ yh, int64_t H, T hs, T hk, \
                                T h_off) {                                                     \
    for (int64_t d = 0; d < H; ++d) {                                                          \
      const T cv = f[d] * cp[d] + i[d] * z[d];                                                 \
      const T h = h_off + hk / (T(1) + exp_poly(-(hs * cv)));                                  \
      c[d] = cv, hc[d] = h, yh[d] = o[d] * h;                                                  \
    }                                                                                          \
  }
LSTMLAB_COMMON_STEP(float)
LSTMLAB_COMMON_STEP(double)
#undef LSTMLAB_COMMON_STEP

// ---- the same cell with peepholes (vanilla): the input and forget gates see c_{t-1}, the output
// gate c_t. First pass: the bias added, z, i and f taken in place, the output gate's bias added
// (its activation waits for c_t); second pass: c, h(c), o = sigma(a_o + P_o c) written back,
// y_hat. The additions in the general loop's order: (a + b) + P c.
#define LSTMLAB_PEEP_STEP(T)                                                                   \
  LSTMLAB_CLONES void peep_gates(T* __restrict__ pre, const T* __restrict__ b,                 \
                                 const T* __restrict__ cp, const T* __restrict__ Pi,           \
                                 const T* __restrict__ Pf, int64_t H, T gs, T gk, T g_off) {   \
    for (int64_t d = 0; d < H; ++d)                                                            \
      pre[d] = g_off + gk / (T(1) + exp_poly(-(gs * (pre[d] + b[d]))));                        \
    T *ai = pre + H, *af = pre + 2 * H, *ao = pre + 3 * H;                                     \
    const T *bi = b + H, *bf = b + 2 * H, *bo = b + 3 * H;                                     \
    for (int64_t d = 0; d < H; ++d) {                                                          \
      ai[d] = T(1) / (T(1) + exp_poly(-((ai[d] + bi[d]) + cp[d] * Pi[d])));                    \
      af[d] = T(1) / (T(1) + exp_poly(-((af[d] + bf[d]) + cp[d] * Pf[d])));                    \
    }                                                                                          \
    for (int64_t d = 0; d < H; ++d) ao[d] += bo[d];                                            \
  }                                                                                            \
  LSTMLAB_CLONES void peep_cell(const T* __restrict__ z, const T* __restrict__ i,              \
                                const T* __restrict__ f, T* __restrict__ o,                    \
                                const T* __restrict__ cp, const T* __restrict__ Po,            \
                                T* __restrict__ c, T* __restrict__ hc, T* __restrict__ yh,     \
                                int64_t H, T hs, T hk, T h_off) {                              \
    for (int64_t d = 0; d < H; ++d) {                                                          \
      const T cv = f[d] * cp[d] + i[d] * z[d];                                                 \
      const T h = h_off + hk / (T(1) + exp_poly(-(hs * cv)));                                  \
      const T og = T(1) / (T(1) + exp_poly(-(o[d] + cv * Po[d])));                             \
      c[d] = cv, hc[d] = h, o[d] = og, yh[d] = og * h;                                         \
    }                                                                                          \
  }
LSTMLAB_PEEP_STEP(float)
LSTMLAB_PEEP_STEP(double)
#undef LSTMLAB_PEEP_STEP

// ---- the backward step of the common cell (no full gate recurrence): one vectorised pass over
// a row's cells, the error responsibilities of the four rows and the carried dc_{t-1}, from the
// activations ZA = [g(z) | i | f | o] of the step (or torch's order [i | f | g(z) | o]: zo), h(c_t), c_{t-1}, dy_hat and dc_t (in dc; out:
// dc_{t-1}). The block-input and cell-output derivatives from their values: f'(x) w = ga (w - gb
// w y y) (tanh (1, 1), bipolar1 (1/2, 1), bipolar2 (1, 1/4): see times_derivative).
// With peepholes (one cell per block: vanilla, the family's default; peep_back) P_o delta_o
// joins dc and P_i delta_i + P_f delta_f join dc_{t-1}, in the general loop's order of
// additions: one body, the peephole terms (PO_TERM, PIF_TERM) and arguments left out for NP.
#define LSTMLAB_CELL_BACK(T, NAME, PO_TERM, PIF_TERM, ...)                                     \
  LSTMLAB_CLONES void NAME(const T* __restrict__ za, const T* __restrict__ hc,                 \
                           const T* __restrict__ cp, const T* __restrict__ dyh,                \
                           T* __restrict__ dc, T* __restrict__ dpre, int64_t H, int64_t zo,    \
                           T al_i, T al_f, T al_o, T ga, T gb, T ha, T hb __VA_ARGS__) {       \
    /* rows z | i | f | o (zo = 0), or torch's i | f | g | o (zo = 2 H) */                     \
    const int64_t io = zo == 0 ? H : 0;                                                        \
    const T *z = za + zo, *gi = za + io, *gf = za + io + H, *go = za + 3 * H;                  \
    T *dz = dpre + zo, *di = dpre + io, *df = dpre + io + H, *dO = dpre + 3 * H;               \
    for (int64_t d = 0; d < H; ++d) {                                                          \
      const T o = go[d], h = hc[d], e = dyh[d];                                                \
      const T d_o = e * (h * (al_o * (o - o * o)));                                            \
      dO[d] = d_o;                                                                             \
      const T c = (dc[d] + e * (ha * (o - hb * (o * h) * h))) PO_TERM;                         \
      const T i = gi[d], f = gf[d], zz = z[d];                                                 \
      const T d_i = c * (zz * (al_i * (i - i * i)));                                           \
      const T d_f = c * (cp[d] * (al_f * (f - f * f)));                                        \
      di[d] = d_i;                                                                             \
      df[d] = d_f;                                                                             \
      dz[d] = c * (ga * (i - gb * (i * zz) * zz));                                             \
      dc[d] = c * f PIF_TERM;                                                                  \
    }                                                                                          \
  }
#define LSTMLAB_PEEP_ARGS(T) \
  , const T* __restrict__ Pi, const T* __restrict__ Pf, const T* __restrict__ Po
LSTMLAB_CELL_BACK(float, common_back, , )
LSTMLAB_CELL_BACK(double, common_back, , )
LSTMLAB_CELL_BACK(float, peep_back, + Po[d] * d_o, + Pi[d] * d_i + Pf[d] * d_f,
                  LSTMLAB_PEEP_ARGS(float))
LSTMLAB_CELL_BACK(double, peep_back, + Po[d] * d_o, + Pi[d] * d_i + Pf[d] * d_f,
                  LSTMLAB_PEEP_ARGS(double))
#undef LSTMLAB_PEEP_ARGS
#undef LSTMLAB_CELL_BACK

// (a, b) of f'(x) w = a (w - b w y y) for the squashing activations (times_derivative)
inline double deriv_a(int64_t act) { return act == BIPOLAR1 ? 0.5 : 1.0; }
inline double deriv_b(int64_t act) { return act == BIPOLAR2 ? 0.25 : 1.0; }

// ---- float32 on x86-64: the same two passes with the reciprocal 1 / (1 + e) taken as the
// hardware's approximation refined by one Newton step, r (2 - y r), instead of a division
// (the division was a third of the pass; one Newton step leaves ~2^-23 relative error with
// AVX2's 12-bit start and ~2^-28 with AVX-512's 14-bit one: float32 round-off). exp as exp_poly
// (the same operations, so the same values). Picked once per process by the CPU's features.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTMLAB_X86_RCP 1

#define LSTMLAB_EXP_VEC(NAME, TGT, V, VI, P)                                                   \
  __attribute__((target(TGT), always_inline)) inline V NAME(V x) {                            \
    /* the clamp keeps a NaN (x86 min / max return their second operand then) */               \
    x = P##_min_ps(P##_set1_ps(88.0f), P##_max_ps(P##_set1_ps(-87.0f), x));                    \
    const V magic = P##_set1_ps(12582912.0f);                                                  \
    const V t = P##_fmadd_ps(x, P##_set1_ps(1.44269504088896341f), magic);                     \
    const V n = P##_sub_ps(t, magic);                                                          \
    const V r = P##_fnmadd_ps(n, P##_set1_ps(-2.12194440e-4f),                                 \
                              P##_fnmadd_ps(n, P##_set1_ps(0.693359375f), x));                 \
    V p = P##_set1_ps(1.0f / 5040.0f);                                                         \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f / 720.0f));                                        \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f / 120.0f));                                        \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f / 24.0f));                                         \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f / 6.0f));                                          \
    p = P##_fmadd_ps(p, r, P##_set1_ps(0.5f));                                                 \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f));                                                 \
    p = P##_fmadd_ps(p, r, P##_set1_ps(1.0f));                                                 \
    const VI e = P##_slli_epi32(                                                               \
        P##_add_epi32(P##_sub_epi32(P##_castps_si##VI##_bits(t), P##_castps_si##VI##_bits(magic)), \
                      P##_set1_epi32(127)),                                                    \
        23);                                                                                   \
    return P##_mul_ps(p, P##_castsi##VI##_bits##_ps(e));                                       \
  }
#define _mm512_castps_si__m512i_bits _mm512_castps_si512
#define _mm512_castsi__m512i_bits_ps _mm512_castsi512_ps
#define _mm256_castps_si__m256i_bits _mm256_castps_si256
#define _mm256_castsi__m256i_bits_ps _mm256_castsi256_ps
LSTMLAB_EXP_VEC(exp16, "avx512f", __m512, __m512i, _mm512)
LSTMLAB_EXP_VEC(exp8, "avx2,fma", __m256, __m256i, _mm256)
#undef LSTMLAB_EXP_VEC

// k / (1 + exp(-v)) + off, the reciprocal by the hardware's approximation RCP and one Newton
// step r (2 - y r)
#define LSTMLAB_SIG_VEC(NAME, TGT, V, P, EXP, RCP)                                              \
  __attribute__((target(TGT), always_inline)) inline V NAME(V v, V k, V off) {                 \
    const V y = P##_add_ps(P##_set1_ps(1.0f), EXP(P##_sub_ps(P##_setzero_ps(), v)));           \
    V r = RCP(y);                                                                              \
    r = P##_mul_ps(r, P##_fnmadd_ps(y, r, P##_set1_ps(2.0f)));                                 \
    return P##_fmadd_ps(k, r, off);                                                            \
  }
LSTMLAB_SIG_VEC(sig16, "avx512f", __m512, _mm512, exp16, _mm512_rcp14_ps)
LSTMLAB_SIG_VEC(sig8, "avx2,fma", __m256, _mm256, exp8, _mm256_rcp_ps)
#undef LSTMLAB_SIG_VEC

// the scalar tail: as above, one element
inline float sig1(float v, float k, float off) { return off + k / (1.0f + exp_poly(-v)); }

// the common cell's step (common_step below) on W-float vectors V of the intrinsics prefix P,
// the reciprocal by SIG; the scalar tails as sig1
#define LSTMLAB_COMMON_STEP_VEC(NAME, TGT, V, P, W, SIG)                                       \
  __attribute__((target(TGT))) void NAME(float* pre, const float* bias, const float* cp,      \
                                         float* c, float* hc, float* yh, int64_t H, float gs,  \
                                         float gk, float g_off, float hs, float hk,            \
                                         float h_off, int64_t zo, int64_t rows, int64_t pst,   \
                                         int64_t cst, int64_t hst) {                           \
    const int64_t D = 4 * H, ze = zo + H;                                                      \
    const V one = P##_set1_ps(1.0f), zero = P##_setzero_ps();                                  \
    const V vgs = P##_set1_ps(gs), vgk = P##_set1_ps(gk), vgo = P##_set1_ps(g_off);            \
    const V vhs = P##_set1_ps(hs), vhk = P##_set1_ps(hk), vho = P##_set1_ps(h_off);            \
    for (int64_t r = 0; r < rows; ++r, pre += pst, cp += cst, c += hst, hc += hst, yh += hst) { \
    int64_t d = 0;                                                                             \
    for (; d + W <= zo; d += W) { /* gates before z (torch's order): sigma(a + b) */           \
      const V a = P##_add_ps(P##_loadu_ps(pre + d), P##_loadu_ps(bias + d));                   \
      P##_storeu_ps(pre + d, SIG(a, one, zero));                                               \
    }                                                                                          \
    for (; d < zo; ++d) pre[d] = sig1(pre[d] + bias[d], 1.0f, 0.0f);                           \
    for (; d + W <= ze; d += W) { /* z: gk sigma(gs (a + b)) + g_off */                        \
      const V a = P##_add_ps(P##_loadu_ps(pre + d), P##_loadu_ps(bias + d));                   \
      P##_storeu_ps(pre + d, SIG(P##_mul_ps(vgs, a), vgk, vgo));                               \
    }                                                                                          \
    for (; d < ze; ++d) pre[d] = sig1(gs * (pre[d] + bias[d]), gk, g_off);                     \
    for (; d + W <= D; d += W) { /* the gates after z: sigma(a + b) */                         \
      const V a = P##_add_ps(P##_loadu_ps(pre + d), P##_loadu_ps(bias + d));                   \
      P##_storeu_ps(pre + d, SIG(a, one, zero));                                               \
    }                                                                                          \
    for (; d < D; ++d) pre[d] = sig1(pre[d] + bias[d], 1.0f, 0.0f);                            \
    const float *z = pre + zo, *i = pre + (zo ? 0 : H), *f = i + H, *o = pre + 3 * H;          \
    for (d = 0; d + W <= H; d += W) { /* c, h(c), y_hat */                                     \
      const V cv = P##_fmadd_ps(P##_loadu_ps(f + d), P##_loadu_ps(cp + d),                     \
                                P##_mul_ps(P##_loadu_ps(i + d), P##_loadu_ps(z + d)));         \
      const V h = SIG(P##_mul_ps(vhs, cv), vhk, vho);                                          \
      P##_storeu_ps(c + d, cv);                                                                \
      P##_storeu_ps(hc + d, h);                                                                \
      P##_storeu_ps(yh + d, P##_mul_ps(P##_loadu_ps(o + d), h));                               \
    }                                                                                          \
    for (; d < H; ++d) {                                                                       \
      const float cv = f[d] * cp[d] + i[d] * z[d];                                             \
      const float h = sig1(hs * cv, hk, h_off);                                                \
      c[d] = cv, hc[d] = h, yh[d] = o[d] * h;                                                  \
    }                                                                                          \
    }                                                                                          \
  }
LSTMLAB_COMMON_STEP_VEC(common_step_avx512, "avx512f", __m512, _mm512, 16, sig16)
LSTMLAB_COMMON_STEP_VEC(common_step_avx2, "avx2,fma", __m256, _mm256, 8, sig8)
#undef LSTMLAB_COMMON_STEP_VEC

// the peephole cell's step (peep_step below), likewise
#define LSTMLAB_PEEP_STEP_VEC(NAME, TGT, V, P, W, SIG)                                         \
  __attribute__((target(TGT))) void NAME(float* pre, const float* bias, const float* cp,      \
                                         const float* Pi, const float* Pf, const float* Po,    \
                                         float* c, float* hc, float* yh, int64_t H, float gs,  \
                                         float gk, float g_off, float hs, float hk,            \
                                         float h_off) {                                        \
    int64_t d = 0;                                                                             \
    const V one = P##_set1_ps(1.0f), zero = P##_setzero_ps();                                  \
    const V vgs = P##_set1_ps(gs), vgk = P##_set1_ps(gk), vgo = P##_set1_ps(g_off);            \
    for (; d + W <= H; d += W) { /* z: gk sigma(gs (a + b)) + g_off */                         \
      const V a = P##_add_ps(P##_loadu_ps(pre + d), P##_loadu_ps(bias + d));                   \
      P##_storeu_ps(pre + d, SIG(P##_mul_ps(vgs, a), vgk, vgo));                               \
    }                                                                                          \
    for (; d < H; ++d) pre[d] = sig1(gs * (pre[d] + bias[d]), gk, g_off);                      \
    float *ai = pre + H, *af = pre + 2 * H, *o = pre + 3 * H;                                  \
    const float *bi = bias + H, *bf = bias + 2 * H, *bo = bias + 3 * H;                        \
    for (d = 0; d + W <= H; d += W) { /* i, f: sigma((a + b) + P c_{t-1}) */                    \
      const V cv = P##_loadu_ps(cp + d);                                                       \
      const V a = P##_add_ps(P##_loadu_ps(ai + d), P##_loadu_ps(bi + d));                      \
      P##_storeu_ps(ai + d, SIG(P##_fmadd_ps(cv, P##_loadu_ps(Pi + d), a), one, zero));        \
      const V e = P##_add_ps(P##_loadu_ps(af + d), P##_loadu_ps(bf + d));                      \
      P##_storeu_ps(af + d, SIG(P##_fmadd_ps(cv, P##_loadu_ps(Pf + d), e), one, zero));        \
    }                                                                                          \
    for (; d < H; ++d) {                                                                       \
      ai[d] = sig1((ai[d] + bi[d]) + cp[d] * Pi[d], 1.0f, 0.0f);                               \
      af[d] = sig1((af[d] + bf[d]) + cp[d] * Pf[d], 1.0f, 0.0f);                               \
    }                                                                                          \
    const float *z = pre, *i = ai, *f = af;                                                    \
    const V vhs = P##_set1_ps(hs), vhk = P##_set1_ps(hk), vho = P##_set1_ps(h_off);            \
    for (d = 0; d + W <= H; d += W) { /* c, h(c), o = sigma((a_o + b) + P_o c), y_hat */        \
      const V cv = P##_fmadd_ps(P##_loadu_ps(f + d), P##_loadu_ps(cp + d),                     \
                                P##_mul_ps(P##_loadu_ps(i + d), P##_loadu_ps(z + d)));         \
      const V h = SIG(P##_mul_ps(vhs, cv), vhk, vho);                                          \
      const V a = P##_add_ps(P##_loadu_ps(o + d), P##_loadu_ps(bo + d));                       \
      const V og = SIG(P##_fmadd_ps(cv, P##_loadu_ps(Po + d), a), one, zero);                  \
      P##_storeu_ps(c + d, cv);                                                                \
      P##_storeu_ps(hc + d, h);                                                                \
      P##_storeu_ps(o + d, og);                                                                \
      P##_storeu_ps(yh + d, P##_mul_ps(og, h));                                                \
    }                                                                                          \
    for (; d < H; ++d) {                                                                       \
      const float cv = f[d] * cp[d] + i[d] * z[d];                                             \
      const float h = sig1(hs * cv, hk, h_off);                                                \
      const float og = sig1((o[d] + bo[d]) + cv * Po[d], 1.0f, 0.0f);                          \
      c[d] = cv, hc[d] = h, o[d] = og, yh[d] = og * h;                                         \
    }                                                                                          \
  }
LSTMLAB_PEEP_STEP_VEC(peep_step_avx512, "avx512f", __m512, _mm512, 16, sig16)
LSTMLAB_PEEP_STEP_VEC(peep_step_avx2, "avx2,fma", __m256, _mm256, 8, sig8)
#undef LSTMLAB_PEEP_STEP_VEC
#endif

// which float32 common-cell passes run: 2 AVX-512, 1 AVX2 with FMA, 0 the portable ones (with
// their division); the best the CPU has, capped by LSTMLAB_NATIVE_SIMD=0 / 1 in the environment
// (tests run every level this machine has)
inline int64_t simd_level() {
  static const int64_t level = [] {
    int64_t best = 0;
#ifdef LSTMLAB_X86_RCP
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
      best = 2;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      best = 1;
    }
#endif
    const char* env = std::getenv("LSTMLAB_NATIVE_SIMD");
    if (env != nullptr && (env[0] == '0' || env[0] == '1') && env[1] == 0)
      best = std::min<int64_t>(best, env[0] - '0');
    return best;
  }();
  return level;
}

// zo: where the block input's rows start (0: [z | i | f | o]; 2 H: torch's [i | f | z | o]);
// `rows` rows, each the next by the strides pst (pre), cst (cp) and hst (c, hc, yh): one call
// for a task's rows, the constants set up once
template <typename T>
inline void common_step(T* pre, const T* bias, const T* cp, T* c, T* hc, T* yh, int64_t H, T gs,
                        T gk, T g_off, T hs, T hk, T h_off, int64_t zo, int64_t rows,
                        int64_t pst, int64_t cst, int64_t hst) {
#ifdef LSTMLAB_X86_RCP
  if constexpr (std::is_same_v<T, float>) {
    const int64_t level = simd_level();
    if (level == 2) {
      common_step_avx512(pre, bias, cp, c, hc, yh, H, gs, gk, g_off, hs, hk, h_off, zo, rows, pst,
                         cst, hst);
      return;
    }
    if (level == 1) {
      common_step_avx2(pre, bias, cp, c, hc, yh, H, gs, gk, g_off, hs, hk, h_off, zo, rows, pst,
                       cst, hst);
      return;
    }
  }
#endif
  for (int64_t r = 0; r < rows; ++r, pre += pst, cp += cst, c += hst, hc += hst, yh += hst) {
    if (zo > 0) sigmoid_affine_bias(pre, bias, zo, T(1), T(1), T(0));
    sigmoid_affine_bias(pre + zo, bias + zo, H, gs, gk, g_off);
    sigmoid_affine_bias(pre + zo + H, bias + zo + H, 3 * H - zo, T(1), T(1), T(0));
    const T* i = pre + (zo ? 0 : H);
    cell_step(pre + zo, i, i + H, pre + 3 * H, cp, c, hc, yh, H, hs, hk, h_off);
  }
}

template <typename T>
inline void peep_step(T* pre, const T* bias, const T* cp, const T* Pi, const T* Pf, const T* Po,
                      T* c, T* hc, T* yh, int64_t H, T gs, T gk, T g_off, T hs, T hk, T h_off) {
#ifdef LSTMLAB_X86_RCP
  if constexpr (std::is_same_v<T, float>) {
    const int64_t level = simd_level();
    if (level == 2) {
      peep_step_avx512(pre, bias, cp, Pi, Pf, Po, c, hc, yh, H, gs, gk, g_off, hs, hk, h_off);
      return;
    }
    if (level == 1) {
      peep_step_avx2(pre, bias, cp, Pi, Pf, Po, c, hc, yh, H, gs, gk, g_off, hs, hk, h_off);
      return;
    }
  }
#endif
  peep_gates(pre, bias, cp, Pi, Pf, H, gs, gk, g_off);
  peep_cell(pre, pre + H, pre + 2 * H, pre + 3 * H, cp, Po, c, hc, yh, H, hs, hk, h_off);
}

}  // namespace
}  // namespace lstmlab_native
