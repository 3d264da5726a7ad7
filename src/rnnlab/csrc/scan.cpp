// rnnlab fused scans (CPU, float32): the sequential part of each recurrent cell in one C++ loop.
//
// Built at install time by `python -m rnnlab.build_kernels` (called by `make install`), never at
// import. Python wraps each forward/backward pair in a torch.autograd.Function (rnnlab/kernels.py).
//
// Every cell does the same thing:
//   forward : per step one matmul of the previous state with W_hh (straight into the BLAS sgemm
//             inside libtorch, else at::mm), then the gate arithmetic in one pass (exp/tanh/sigmoid
//             vectorised with AVX2/FMA when the build machine has them), saving what backward needs;
//   backward: per step only the dh recursion (one matmul with W_hh plus the gate derivatives);
//             the weight gradients of all steps come afterwards as one GEMM each
//             (dW_hh = sum_t dgates_t^T h_{t-1} over the stacked steps), and db as one sum.
// RNN, GRU, LSTM and CTRNN take and return time-major sequences (T, B, .), states (T+1, B, H) with
// h0 at index 0: a step's rows are one contiguous block, the weight-gradient GEMM needs no copy, and
// dxw goes back to the (time-major) input projection's GEMM as it is. minGRU and the linear scan
// are batch-major (their rows are independent and run in parallel).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RNNLAB_AVX2 1
#endif

#include <dlfcn.h>

using at::Tensor;

// Per-step matmuls call the BLAS sgemm inside libtorch (MKL on x86 wheels) directly when it is
// exported, skipping the ATen dispatcher (a few microseconds per call, which is most of a step at
// small sizes); otherwise they go through at::mm_out. Row-major helpers on raw pointers:
//   mm_wt: C (rows x n) = beta C + A (rows x k) W^T,  W (n x k)      (forward: h W_hh^T)
//   mm_w : C (rows x k) = beta C + D (rows x n) W,    W (n x k)      (backward: dh W_hh)
using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                          const int*, const float*, const int*, const float*, float*, const int*);

static sgemm_fn find_sgemm() {
  static sgemm_fn fn = reinterpret_cast<sgemm_fn>(dlsym(RTLD_DEFAULT, "sgemm_"));
  return fn;
}

namespace {

constexpr int kTanh = 0, kRelu = 1, kSoftplus = 2;
constexpr int64_t kVersion = 7;  // bump when a signature changes; kernels.py checks it

#ifdef RNNLAB_AVX2
// exp for 8 floats, inlined (Cephes' expf: n = round(x / ln 2), degree-6 polynomial of the remainder,
// times 2^n; a few ulp), clamped to [-88.38, 88.38] so exp(-big) = 0 and exp(big) = inf
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f)), _mm256_set1_ps(88.3762626647949f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(0x7f)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

// sigmoid(x) = 1 / (1 + exp(-x))
inline __m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
#endif

// tanh(x) = 2 sigmoid(2x) - 1 (absolute error ~1e-7)
inline void vtanh(float* p, int64_t n) {
  int64_t j = 0;
#ifdef RNNLAB_AVX2
  const __m256 two = _mm256_set1_ps(2.f), one = _mm256_set1_ps(1.f);
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(p + j, _mm256_fmsub_ps(two, sigmoid8(_mm256_mul_ps(two, _mm256_loadu_ps(p + j))), one));
#endif
  for (; j < n; ++j) p[j] = std::tanh(p[j]);
}

inline void vsigmoid(float* p, int64_t n) {
  int64_t j = 0;
#ifdef RNNLAB_AVX2
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, sigmoid8(_mm256_loadu_ps(p + j)));
#endif
  for (; j < n; ++j) p[j] = 1.f / (1.f + std::exp(-p[j]));
}

// activation in place; softplus as torch's F.softplus (beta 1, threshold 20)
inline void vact(float* p, int64_t n, int act) {
  if (act == kTanh) {
    vtanh(p, n);
  } else if (act == kRelu) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) p[j] = p[j] > 0.f ? p[j] : 0.f;
  } else {
    #pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) p[j] = p[j] > 20.f ? p[j] : std::log1p(std::exp(p[j]));
  }
}

// rows [b0, b1) of a batch; small problems run inline on the calling thread
template <class F>
inline void for_rows(int64_t B, int64_t width, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, width));
  at::parallel_for(0, B, grain, f);
}

inline void mm_wt(const float* A, const float* W, float* C, int64_t rows, int64_t k, int64_t n, float beta) {
  if (sgemm_fn f = find_sgemm()) {
    const int m_ = static_cast<int>(n), n_ = static_cast<int>(rows), k_ = static_cast<int>(k);
    const float one = 1.f;
    f("T", "N", &m_, &n_, &k_, &one, W, &k_, A, &k_, &beta, C, &m_);
    return;
  }
  auto opt = at::TensorOptions().dtype(at::kFloat);
  Tensor a = at::from_blob(const_cast<float*>(A), {rows, k}, opt);
  Tensor w = at::from_blob(const_cast<float*>(W), {n, k}, opt);
  Tensor c = at::from_blob(C, {rows, n}, opt);
  if (beta == 0.f) at::mm_out(c, a, w.t());
  else c.addmm_(a, w.t());
}

inline void mm_w(const float* D, const float* W, float* C, int64_t rows, int64_t n, int64_t k, float beta) {
  if (sgemm_fn f = find_sgemm()) {
    const int m_ = static_cast<int>(k), n_ = static_cast<int>(rows), k_ = static_cast<int>(n);
    const float one = 1.f;
    f("N", "N", &m_, &n_, &k_, &one, W, &m_, D, &k_, &beta, C, &m_);
    return;
  }
  auto opt = at::TensorOptions().dtype(at::kFloat);
  Tensor d = at::from_blob(const_cast<float*>(D), {rows, n}, opt);
  Tensor w = at::from_blob(const_cast<float*>(W), {n, k}, opt);
  Tensor c = at::from_blob(C, {rows, k}, opt);
  if (beta == 0.f) at::mm_out(c, d, w);
  else c.addmm_(d, w);
}

void check(const Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.device().is_cpu() && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

// ------------------------------------------------------------------------------------------
// Elman RNN: h_t = act(xw_t + h_{t-1} W^T + b_hh)
// Every sequence tensor here is time-major (T, B, .): a step's rows are one contiguous block.
// ------------------------------------------------------------------------------------------

Tensor rnn_forward(const Tensor& xw, const Tensor& h0, const Tensor& w, const Tensor& b, int64_t act) {
  check(xw, "xw"); check(h0, "h0"); check(w, "w_hh");
  const int64_t T = xw.size(0), B = xw.size(1), H = xw.size(2);
  Tensor S = at::empty({T + 1, B, H}, xw.options());
  S[0].copy_(h0);
  Tensor hw = at::empty({B, H}, xw.options());
  const float* wp = w.data_ptr<float>();
  const float* X = xw.data_ptr<float>();
  const float* bp = b.numel() ? b.data_ptr<float>() : nullptr;
  float* sp = S.data_ptr<float>();
  float* hwp = hw.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    mm_wt(sp + t * B * H, wp, hwp, B, H, H, 0.f);
    const float* x = X + t * B * H;
    float* out = sp + (t + 1) * B * H;
    for_rows(B, H, [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0; r < b1; ++r) {
        const float *xr = x + r * H, *m = hwp + r * H;
        float* o = out + r * H;
        if (bp) {
          #pragma GCC ivdep
          for (int64_t j = 0; j < H; ++j) o[j] = xr[j] + m[j] + bp[j];
        }
        else {
          #pragma GCC ivdep
          for (int64_t j = 0; j < H; ++j) o[j] = xr[j] + m[j];
        }
        vact(o, H, act == kTanh ? kTanh : kRelu);
      }
    });
  }
  return S;
}

// gout (T,B,H) -> D = dxw written into `D` (T,B,H; may be gout itself: each element is read before
// it is written), returns dh0, dW, db
std::vector<Tensor> rnn_backward(const Tensor& gout, const Tensor& D, const Tensor& S, const Tensor& w, int64_t act) {
  check(gout, "grad"); check(D, "dxw"); check(S, "states"); check(w, "w_hh");
  const float* wp = w.data_ptr<float>();
  const int64_t T = S.size(0) - 1, B = S.size(1), H = S.size(2);
  Tensor carry = at::zeros({B, H}, S.options());
  const float* G = gout.data_ptr<float>();
  const float* sp = S.data_ptr<float>();
  float* dp = D.data_ptr<float>();
  const float* cp = carry.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* y = sp + (t + 1) * B * H;
    const float* g = G + t * B * H;
    float* d = dp + t * B * H;
    for_rows(B, H, [&](int64_t b0, int64_t b1) {
      const int64_t lo = b0 * H, hi = b1 * H;  // the rows' elements are contiguous
      if (act == kTanh) {
        #pragma GCC ivdep
        for (int64_t j = lo; j < hi; ++j) d[j] = (g[j] + cp[j]) * (1.f - y[j] * y[j]);
      } else {
        #pragma GCC ivdep
        for (int64_t j = lo; j < hi; ++j) d[j] = y[j] > 0.f ? g[j] + cp[j] : 0.f;
      }
    });
    mm_w(d, wp, carry.data_ptr<float>(), B, H, H, 0.f);
  }
  Tensor dW = at::mm(D.view({T * B, H}).t(), S.narrow(0, 0, T).reshape({T * B, H}));
  Tensor db = D.view({T * B, H}).sum(0);
  return {carry, dW, db};
}

// ------------------------------------------------------------------------------------------
// GRU (gates r, z, n):  r,z = sigmoid(x_rz + h W_rz^T + b_rz);  n = tanh(x_n + r * (h W_n^T + b_hn))
//                       h' = (1 - z) n + z h
// saved per step: r, z, n, hn = h W_n^T + b_hn  -> Gs (T, B, 4H)
// ------------------------------------------------------------------------------------------

std::vector<Tensor> gru_forward(const Tensor& xw, const Tensor& h0, const Tensor& w, const Tensor& b) {
  check(xw, "xw"); check(h0, "h0"); check(w, "w_hh");
  const int64_t T = xw.size(0), B = xw.size(1), H = xw.size(2) / 3;
  Tensor S = at::empty({T + 1, B, H}, xw.options());
  S[0].copy_(h0);
  Tensor Gs = at::empty({T, B, 4 * H}, xw.options());
  Tensor hw = at::empty({B, 3 * H}, xw.options());
  const float* wp = w.data_ptr<float>();
  const float* X = xw.data_ptr<float>();
  const float* bp = b.numel() ? b.data_ptr<float>() : nullptr;
  float* sp = S.data_ptr<float>();
  float* gp = Gs.data_ptr<float>();
  float* hwp = hw.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    mm_wt(sp + t * B * H, wp, hwp, B, H, 3 * H, 0.f);
    for_rows(B, 4 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0; r < b1; ++r) {
        const float* x = X + (t * B + r) * 3 * H;
        const float* m = hwp + r * 3 * H;
        float* g = gp + (t * B + r) * 4 * H;
        float *rz = g, *z = g + H, *n = g + 2 * H, *hn = g + 3 * H;
        const float* hp = sp + (t * B + r) * H;
        float* ho = sp + ((t + 1) * B + r) * H;
        if (bp) {
          #pragma GCC ivdep
          for (int64_t j = 0; j < 2 * H; ++j) rz[j] = x[j] + m[j] + bp[j];
        }
        else {
          #pragma GCC ivdep
          for (int64_t j = 0; j < 2 * H; ++j) rz[j] = x[j] + m[j];
        }
        vsigmoid(rz, 2 * H);
        if (bp) {
          #pragma GCC ivdep
          for (int64_t j = 0; j < H; ++j) hn[j] = m[2 * H + j] + bp[2 * H + j];
        }
        else {
          #pragma GCC ivdep
          for (int64_t j = 0; j < H; ++j) hn[j] = m[2 * H + j];
        }
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) n[j] = x[2 * H + j] + rz[j] * hn[j];
        vtanh(n, H);
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) ho[j] = n[j] + z[j] * (hp[j] - n[j]);
      }
    });
  }
  return {S, Gs};
}

// gout (T,B,H) -> dxw (T,B,3H), dh0, dW (3H,H), db_hh (3H)
std::vector<Tensor> gru_backward(const Tensor& gout, const Tensor& S, const Tensor& Gs, const Tensor& w) {
  check(gout, "grad"); check(S, "states"); check(Gs, "gates"); check(w, "w_hh");
  const float* wp = w.data_ptr<float>();
  const int64_t T = S.size(0) - 1, B = S.size(1), H = S.size(2);
  Tensor DX = at::empty({T, B, 3 * H}, S.options());
  Tensor DHW = at::empty({T, B, 3 * H}, S.options());
  Tensor carry = at::zeros({B, H}, S.options());
  const float* G = gout.data_ptr<float>();
  const float* sp = S.data_ptr<float>();
  const float* gp = Gs.data_ptr<float>();
  float* dxp = DX.data_ptr<float>();
  float* dhp = DHW.data_ptr<float>();
  float* cp = carry.data_ptr<float>();  // dh_{t-1} starts as the direct path z * dh_t, in place
  for (int64_t t = T - 1; t >= 0; --t) {
    for_rows(B, 4 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0; r < b1; ++r) {
        const float* g = G + (t * B + r) * H;
        const float* gs = gp + (t * B + r) * 4 * H;
        const float *rr = gs, *z = gs + H, *n = gs + 2 * H, *hn = gs + 3 * H;
        const float* hp = sp + (t * B + r) * H;
        float* dx = dxp + (t * B + r) * 3 * H;
        float* dh = dhp + (t * B + r) * 3 * H;
        float* c = cp + r * H;
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
          const float gh = g[j] + c[j];
          const float dn = gh * (1.f - z[j]);
          const float dz = gh * (hp[j] - n[j]);
          c[j] = gh * z[j];
          const float dpn = dn * (1.f - n[j] * n[j]);
          const float dpr = dpn * hn[j] * rr[j] * (1.f - rr[j]);
          const float dpz = dz * z[j] * (1.f - z[j]);
          dx[j] = dpr; dx[H + j] = dpz; dx[2 * H + j] = dpn;
          dh[j] = dpr; dh[H + j] = dpz; dh[2 * H + j] = dpn * rr[j];
        }
      }
    });
    mm_w(dhp + t * B * 3 * H, wp, cp, B, 3 * H, H, 1.f);  // carry = direct + dhw W
  }
  Tensor dW = at::mm(DHW.view({T * B, 3 * H}).t(), S.narrow(0, 0, T).reshape({T * B, H}));
  Tensor db = DHW.view({T * B, 3 * H}).sum(0);
  return {DX, carry, dW, db};
}

// ------------------------------------------------------------------------------------------
// LSTM (gates i, f, g, o):  gates = xw_t + h W^T + b_hh;  c' = f c + i g;  h' = o tanh(c')
// H_s, C_s: (T+1, B, H) with h0, c0 at index 0; saved per step: i, f, g, o, tanh(c') -> Gs (T, B, 5H)
// ------------------------------------------------------------------------------------------

std::vector<Tensor> lstm_forward(const Tensor& xw, const Tensor& h0, const Tensor& c0, const Tensor& w,
                                 const Tensor& b) {
  check(xw, "xw"); check(h0, "h0"); check(c0, "c0"); check(w, "w_hh");
  const int64_t T = xw.size(0), B = xw.size(1), H = xw.size(2) / 4;
  Tensor S = at::empty({T + 1, B, H}, xw.options());
  Tensor C = at::empty({T + 1, B, H}, xw.options());
  S[0].copy_(h0);
  C[0].copy_(c0);
  Tensor Gs = at::empty({T, B, 5 * H}, xw.options());
  Tensor hw = at::empty({B, 4 * H}, xw.options());
  const float* wp = w.data_ptr<float>();
  const float* X = xw.data_ptr<float>();
  const float* bp = b.numel() ? b.data_ptr<float>() : nullptr;
  float* sp = S.data_ptr<float>();
  float* cp = C.data_ptr<float>();
  float* gp = Gs.data_ptr<float>();
  float* hwp = hw.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    mm_wt(sp + t * B * H, wp, hwp, B, H, 4 * H, 0.f);
    for_rows(B, 5 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0; r < b1; ++r) {
        const float* x = X + (t * B + r) * 4 * H;
        const float* m = hwp + r * 4 * H;
        float* g = gp + (t * B + r) * 5 * H;
        float *gi = g, *gf = g + H, *gg = g + 2 * H, *go = g + 3 * H, *tc = g + 4 * H;
        if (bp) {
          #pragma GCC ivdep
          for (int64_t j = 0; j < 4 * H; ++j) g[j] = x[j] + m[j] + bp[j];
        }
        else {
          #pragma GCC ivdep
          for (int64_t j = 0; j < 4 * H; ++j) g[j] = x[j] + m[j];
        }
        vsigmoid(gi, 2 * H);
        vtanh(gg, H);
        vsigmoid(go, H);
        const float* cprev = cp + (t * B + r) * H;
        float* cn = cp + ((t + 1) * B + r) * H;
        float* hn = sp + ((t + 1) * B + r) * H;
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) tc[j] = cn[j] = gf[j] * cprev[j] + gi[j] * gg[j];
        vtanh(tc, H);
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) hn[j] = go[j] * tc[j];
      }
    });
  }
  return {S, C, Gs};
}

// grads of the h and c sequences (T,B,H; gc may be empty: no gradient) -> dxw (T,B,4H), dh0, dc0, dW (4H,H), db (4H)
std::vector<Tensor> lstm_backward(const Tensor& gh, const Tensor& gc, const Tensor& S, const Tensor& C,
                                  const Tensor& Gs, const Tensor& w) {
  check(gh, "grad h"); check(S, "states"); check(Gs, "gates"); check(w, "w_hh");
  if (gc.numel()) check(gc, "grad c");
  const int64_t T = S.size(0) - 1, B = S.size(1), H = S.size(2);
  const float* wp = w.data_ptr<float>();
  Tensor D = at::empty({T, B, 4 * H}, S.options());
  Tensor carry_h = at::zeros({B, H}, S.options());
  Tensor carry_c = at::zeros({B, H}, S.options());
  const float* GH = gh.data_ptr<float>();
  const float* GC = gc.numel() ? gc.data_ptr<float>() : nullptr;
  const float* cp = C.data_ptr<float>();
  const float* gp = Gs.data_ptr<float>();
  float* dp = D.data_ptr<float>();
  float* chp = carry_h.data_ptr<float>();
  float* ccp = carry_c.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    for_rows(B, 5 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0; r < b1; ++r) {
        const float* g_h = GH + (t * B + r) * H;
        const float* g = gp + (t * B + r) * 5 * H;
        const float *gi = g, *gf = g + H, *gg = g + 2 * H, *go = g + 3 * H, *tc = g + 4 * H;
        const float* cprev = cp + (t * B + r) * H;
        const float* ch = chp + r * H;
        float* cc = ccp + r * H;
        if (GC) {
          const float* g_c = GC + (t * B + r) * H;
          #pragma GCC ivdep
          for (int64_t j = 0; j < H; ++j) cc[j] += g_c[j];
        }
        float* d = dp + (t * B + r) * 4 * H;
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
          const float dh = g_h[j] + ch[j];
          const float dc = cc[j] + dh * go[j] * (1.f - tc[j] * tc[j]);
          d[j] = dc * gg[j] * gi[j] * (1.f - gi[j]);
          d[H + j] = dc * cprev[j] * gf[j] * (1.f - gf[j]);
          d[2 * H + j] = dc * gi[j] * (1.f - gg[j] * gg[j]);
          d[3 * H + j] = dh * tc[j] * go[j] * (1.f - go[j]);
          cc[j] = dc * gf[j];
        }
      }
    });
    mm_w(dp + t * B * 4 * H, wp, chp, B, 4 * H, H, 0.f);
  }
  Tensor dW = at::mm(D.view({T * B, 4 * H}).t(), S.narrow(0, 0, T).reshape({T * B, H}));
  Tensor db = D.view({T * B, 4 * H}).sum(0);
  return {D, carry_h, carry_c, dW, db};
}

// ------------------------------------------------------------------------------------------
// CTRNN: x_{t+1} = (1 - a) x_t + a (f(x_t) W^T + xw_t) + noise_t,  r = f(x)
// X, R: (T+1, B, H) with x0, f(x0) at index 0
// ------------------------------------------------------------------------------------------

std::vector<Tensor> ctrnn_forward(const Tensor& xw, const Tensor& x0, const Tensor& w, double alpha, int64_t act,
                                  const Tensor& noise) {
  check(xw, "xw"); check(x0, "x0"); check(w, "w_rec");
  if (noise.numel()) check(noise, "noise");
  const int64_t T = xw.size(0), B = xw.size(1), H = xw.size(2);
  Tensor Xs = at::empty({T + 1, B, H}, xw.options());
  Tensor Rs = at::empty({T + 1, B, H}, xw.options());
  Xs[0].copy_(x0);
  Rs[0].copy_(x0);
  vact(Rs.data_ptr<float>(), B * H, static_cast<int>(act));
  Tensor m = at::empty({B, H}, xw.options());
  const float* wp = w.data_ptr<float>();
  const float a = static_cast<float>(alpha), keep = 1.f - a;
  const float* X = xw.data_ptr<float>();
  const float* N = noise.numel() ? noise.data_ptr<float>() : nullptr;
  float* xp = Xs.data_ptr<float>();
  float* rp = Rs.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    mm_wt(rp + t * B * H, wp, mp, B, H, H, 0.f);
    const int64_t o = t * B * H;  // step t's block in xw, noise, and (shifted by one step) in Xs, Rs
    for_rows(B, H, [&](int64_t b0, int64_t b1) {
      const int64_t lo = b0 * H, hi = b1 * H;
      const float *u = X + o, *xo = xp + o;
      float *xn = xp + o + B * H, *rn = rp + o + B * H;
      #pragma GCC ivdep
      for (int64_t j = lo; j < hi; ++j) xn[j] = keep * xo[j] + a * (mp[j] + u[j]);
      if (N) {
        #pragma GCC ivdep
        for (int64_t j = lo; j < hi; ++j) xn[j] += N[o + j];
      }
      #pragma GCC ivdep
      for (int64_t j = lo; j < hi; ++j) rn[j] = xn[j];
      vact(rn + lo, hi - lo, static_cast<int>(act));
    });
  }
  return {Xs, Rs};
}

// f'(x) for the rows' elements [lo, hi), given x and y = f(x)
inline void dact(const float* x, const float* y, float* out, int64_t lo, int64_t hi, int act) {
  if (act == kTanh) {
    #pragma GCC ivdep
    for (int64_t j = lo; j < hi; ++j) out[j] = 1.f - y[j] * y[j];
  } else if (act == kRelu) {
    #pragma GCC ivdep
    for (int64_t j = lo; j < hi; ++j) out[j] = x[j] > 0.f ? 1.f : 0.f;
  } else {
    for (int64_t j = lo; j < hi; ++j) out[j] = x[j] > 20.f ? 1.f : 1.f / (1.f + std::exp(-x[j]));
  }
}

// grads of rates and states (T,B,H; gstates may be empty: no gradient) -> D = dL/dxw = a dL/dx_{t+1},
// written into `D` (T,B,H; may be grates itself: each element is read before it is written);
// returns dx0, dW
std::vector<Tensor> ctrnn_backward(const Tensor& grates, const Tensor& gstates, const Tensor& D, const Tensor& Xs,
                                   const Tensor& Rs, const Tensor& w, double alpha, int64_t act) {
  check(grates, "grad rates"); check(D, "dxw"); check(w, "w_rec");
  if (gstates.numel()) check(gstates, "grad states");
  const float* wp = w.data_ptr<float>();
  const int64_t T = Xs.size(0) - 1, B = Xs.size(1), H = Xs.size(2);
  // gx = dL/dx_{t+1} of the step after the current one (unscaled), m = gx W, fp = f'(x_{t+1})
  Tensor gx = at::zeros({B, H}, Xs.options()), m = at::zeros({B, H}, Xs.options());
  Tensor fp = at::empty({B, H}, Xs.options());
  const float a = static_cast<float>(alpha), keep = 1.f - a;
  const float* gR = grates.data_ptr<float>();
  const float* gX = gstates.numel() ? gstates.data_ptr<float>() : nullptr;
  const float* xp = Xs.data_ptr<float>();
  const float* rp = Rs.data_ptr<float>();
  float* dp = D.data_ptr<float>();
  float *gxp = gx.data_ptr<float>(), *mp = m.data_ptr<float>(), *fpp = fp.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    if (t < T - 1) mm_w(gxp, wp, mp, B, H, H, 0.f);
    const int64_t o = t * B * H;
    for_rows(B, H, [&](int64_t b0, int64_t b1) {
      const int64_t lo = b0 * H, hi = b1 * H;
      dact(xp + o + B * H, rp + o + B * H, fpp, lo, hi, static_cast<int>(act));
      const float* gr = gR + o;
      float* d = dp + o;
      #pragma GCC ivdep
      for (int64_t j = lo; j < hi; ++j) {
        const float g = fpp[j] * (gr[j] + a * mp[j]) + keep * gxp[j] + (gX ? gX[o + j] : 0.f);
        gxp[j] = g;
        d[j] = a * g;
      }
    });
  }
  mm_w(gxp, wp, mp, B, H, H, 0.f);
  Tensor dx0 = at::empty({B, H}, Xs.options());
  dact(xp, rp, fpp, 0, B * H, static_cast<int>(act));
  float* d0 = dx0.data_ptr<float>();
  for (int64_t k = 0; k < B * H; ++k) d0[k] = keep * gxp[k] + fpp[k] * a * mp[k];
  Tensor dW = at::mm(D.view({T * B, H}).t(), Rs.narrow(0, 0, T).reshape({T * B, H}));
  return {dx0, dW};
}

// ------------------------------------------------------------------------------------------
// Linear recurrence h_t = a_t * h_{t-1} + b_t (element-wise): minGRU / minLSTM sequential mode
// a, b: (B, T, H) batch-first; each batch row is independent, so rows run in parallel
// ------------------------------------------------------------------------------------------

Tensor linear_scan_forward(const Tensor& A, const Tensor& Bv, const Tensor& h0) {
  check(A, "a"); check(Bv, "b"); check(h0, "h0");
  const int64_t B = A.size(0), T = A.size(1), H = A.size(2);
  Tensor Hs = at::empty({B, T, H}, A.options());
  const float* ap = A.data_ptr<float>();
  const float* bp = Bv.data_ptr<float>();
  const float* h0p = h0.data_ptr<float>();
  float* hp = Hs.data_ptr<float>();
  at::parallel_for(0, B, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, T * H)), [&](int64_t b0, int64_t b1) {
    for (int64_t r = b0; r < b1; ++r) {
      const float* prev = h0p + r * H;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t o = (r * T + t) * H;
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) hp[o + j] = ap[o + j] * prev[j] + bp[o + j];
        prev = hp + o;
      }
    }
  });
  return Hs;
}

// returns da, db, dh0
std::vector<Tensor> linear_scan_backward(const Tensor& g, const Tensor& A, const Tensor& Hs, const Tensor& h0) {
  check(g, "grad"); check(A, "a"); check(Hs, "h"); check(h0, "h0");
  const int64_t B = A.size(0), T = A.size(1), H = A.size(2);
  Tensor dA = at::empty_like(A), dB = at::empty_like(A), dh0 = at::empty_like(h0);
  const float* gp = g.data_ptr<float>();
  const float* ap = A.data_ptr<float>();
  const float* hp = Hs.data_ptr<float>();
  const float* h0p = h0.data_ptr<float>();
  float *dap = dA.data_ptr<float>(), *dbp = dB.data_ptr<float>(), *d0 = dh0.data_ptr<float>();
  at::parallel_for(0, B, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, T * H)), [&](int64_t b0, int64_t b1) {
    std::vector<float> carry(H);
    for (int64_t r = b0; r < b1; ++r) {
      std::fill(carry.begin(), carry.end(), 0.f);
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t o = (r * T + t) * H;
        const float* prev = t > 0 ? hp + o - H : h0p + r * H;
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
          const float gh = gp[o + j] + carry[j];
          dbp[o + j] = gh;
          dap[o + j] = gh * prev[j];
          carry[j] = gh * ap[o + j];
        }
      }
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) d0[r * H + j] = carry[j];
    }
  });
  return {dA, dB, dh0};
}

// ------------------------------------------------------------------------------------------
// minGRU, fused: k (B, T, 2H) = [k_z, k_h] from the input projection;
//   z = sigmoid(k_z), g = k_h + 0.5 (k_h >= 0) or sigmoid(k_h), h_t = (1 - z) h_{t-1} + z g
// forward keeps z and g for backward (Z, G: (B, T, H)), so backward is arithmetic only
// ------------------------------------------------------------------------------------------

inline void mingru_gates(const float* kz, const float* kh, float* z, float* g, int64_t H) {
  #pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) { z[j] = kz[j]; g[j] = kh[j]; }
  vsigmoid(z, H);
  vsigmoid(g, H);
  #pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) g[j] = kh[j] >= 0.f ? kh[j] + 0.5f : g[j];
}

std::vector<Tensor> mingru_forward(const Tensor& k, const Tensor& h0) {
  check(k, "k"); check(h0, "h0");
  const int64_t B = k.size(0), T = k.size(1), H = k.size(2) / 2;
  Tensor Hs = at::empty({B, T, H}, k.options());
  Tensor Z = at::empty({B, T, H}, k.options()), G = at::empty({B, T, H}, k.options());
  const float* kp = k.data_ptr<float>();
  const float* h0p = h0.data_ptr<float>();
  float* hp = Hs.data_ptr<float>();
  float* zp = Z.data_ptr<float>();
  float* gp = G.data_ptr<float>();
  at::parallel_for(0, B, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, T * H)), [&](int64_t b0, int64_t b1) {
    for (int64_t r = b0; r < b1; ++r) {
      const float* prev = h0p + r * H;
      for (int64_t t = 0; t < T; ++t) {
        const float* kr = kp + (r * T + t) * 2 * H;
        float* z = zp + (r * T + t) * H;
        float* g = gp + (r * T + t) * H;
        mingru_gates(kr, kr + H, z, g, H);
        float* o = hp + (r * T + t) * H;
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) o[j] = (1.f - z[j]) * prev[j] + z[j] * g[j];
        prev = o;
      }
    }
  });
  return {Hs, Z, G};
}

// returns dk (B, T, 2H), dh0
std::vector<Tensor> mingru_backward(const Tensor& gout, const Tensor& k, const Tensor& Hs, const Tensor& h0,
                                    const Tensor& Z, const Tensor& G) {
  check(gout, "grad"); check(k, "k"); check(Hs, "h"); check(h0, "h0"); check(Z, "z"); check(G, "g");
  const float* zp = Z.data_ptr<float>();
  const float* gtp = G.data_ptr<float>();
  const int64_t B = k.size(0), T = k.size(1), H = k.size(2) / 2;
  Tensor dk = at::empty_like(k), dh0 = at::empty_like(h0);
  const float* gp = gout.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* hp = Hs.data_ptr<float>();
  const float* h0p = h0.data_ptr<float>();
  float* dkp = dk.data_ptr<float>();
  float* d0 = dh0.data_ptr<float>();
  at::parallel_for(0, B, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, T * H)), [&](int64_t b0, int64_t b1) {
    std::vector<float> carry(H);
    for (int64_t r = b0; r < b1; ++r) {
      std::fill(carry.begin(), carry.end(), 0.f);
      for (int64_t t = T - 1; t >= 0; --t) {
        const float* kr = kp + (r * T + t) * 2 * H;
        const float* z = zp + (r * T + t) * H;
        const float* g = gtp + (r * T + t) * H;
        const float* prev = t > 0 ? hp + (r * T + t - 1) * H : h0p + r * H;
        const float* go = gp + (r * T + t) * H;
        float* dkr = dkp + (r * T + t) * 2 * H;
        #pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
          const float gh = go[j] + carry[j];
          carry[j] = gh * (1.f - z[j]);
          const float dz = gh * (g[j] - prev[j]);
          dkr[j] = dz * z[j] * (1.f - z[j]);
          const float dgt = gh * z[j];
          // g' = 1 for k_h >= 0, else sigmoid' = g (1 - g)
          dkr[H + j] = kr[H + j] >= 0.f ? dgt : dgt * g[j] * (1.f - g[j]);
        }
      }
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) d0[r * H + j] = carry[j];
    }
  });
  return {dk, dh0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnlab fused recurrent scans (CPU float32)";
  m.attr("VERSION") = kVersion;
#ifdef RNNLAB_AVX2
  m.attr("VECTORISED") = true;
#else
  m.attr("VECTORISED") = false;
#endif
  m.def("rnn_forward", &rnn_forward);
  m.def("rnn_backward", &rnn_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("direct_blas", []() { return find_sgemm() != nullptr; });
  m.def("ctrnn_forward", &ctrnn_forward);
  m.def("ctrnn_backward", &ctrnn_backward);
  m.def("mingru_forward", &mingru_forward);
  m.def("mingru_backward", &mingru_backward);
  m.def("linear_scan_forward", &linear_scan_forward);
  m.def("linear_scan_backward", &linear_scan_backward);
}
