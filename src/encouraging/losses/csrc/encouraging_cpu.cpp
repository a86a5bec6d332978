// The encouraging loss of (N, C) logits against class indices on the CPU, with its autograd in C++.
//
// Why by hand: at 10 classes every eager op costs its dispatch (a few microseconds each), and the fused eager
// path (encouraging/losses/fused.py) still runs about 30 of them per call where F.cross_entropy runs 8 inside
// C++. No library computes EL; this kernel does the closed forms of fused._plain_loss_and_grad and
// fused._smoothed_loss_and_grad with two ATen calls (empty, a vectorized exp_) and row loops, and registers its
// backward in C++ as F.cross_entropy does, so no Python runs between forward and backward.
//
// Per row i with target y, p = softmax(f_i), class weight w_y, bonus weight v_y, scale rho (all 1 without them),
// m = 1 - p_y taken as the other classes' sum (exact, no cancellation):
//   conservative (log_end < 1, gap = 1 - log_end): c = max(m, gap),
//     loss = -w_y log p_y + rho v_y [log c + (m - c) / gap],
//     grad = s (p - e_y) with s = w_y + rho v_y p_y / c (target column -s m);
//   full (log_end = 1): bonus log m (floored: log max(m, floor), slope 0 where m < floor),
//     r = (w_y m + slope p_y) / (m + p_y), grad_k = r p_k / m off the target and -r on it (bounded for any logits);
//   label smoothing (conservative bonus): see smoothed_row.
// Rows whose target is ignore_index give 0. 'mean' divides by the summed w_y of the other rows, as torch does.
// Rows are computed in float64 for float64 logits, else in float32 (half-precision logits are read, not copied).
// loss_and_grad gives the same rows without autograd (per-row losses, the gradient times per-row factors): the
// chunks of linear_encouraging_loss.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kNone = 0, kMean = 1;  // at::Reduction::None, Mean (Sum = 2)

struct Options {
  int64_t ignore_index;
  int64_t reduction;
  double label_smoothing;
  double log_end;
  double bonus_scale;
  double bonus_floor;
};

// The sum of a row with eight independent accumulators (double): exact enough and not one long add chain.
template <typename T>
double row_sum(const T* x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[k + j];
  double total = 0;
  for (; k < n; ++k) total += x[k];
  for (double a : acc) total += a;
  return total;
}

// Rows per task of at::parallel_for: about ATen's grain of elements per task.
int64_t row_grain(int64_t c) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(c, 1));
}

// One row of the full bonus whose other classes' probabilities underflow (sum below `tiny`): log(1 - p_y) and
// p_k / (1 - p_y) from the logits by logsumexp over the other classes, in double.
template <typename X>
void full_row_from_logits(const X* x, int64_t c, int64_t y, double* log1m, double* lse_other) {
  double top = -std::numeric_limits<double>::infinity(), all_top = top;
  for (int64_t k = 0; k < c; ++k) {
    all_top = std::max(all_top, double(x[k]));
    if (k != y) top = std::max(top, double(x[k]));
  }
  double others = 0, all = 0;
  for (int64_t k = 0; k < c; ++k) {
    all += std::exp(double(x[k]) - all_top);
    if (k != y) others += std::exp(double(x[k]) - top);
  }
  *lse_other = top + std::log(others);
  *log1m = *lse_other - (all_top + std::log(all));
}

// One row's target statistics, from gi = exp(f - max f): the softmax's sum, the other classes' sum (so 1 - p_y
// is exact, no cancellation), log p_y as log_softmax computes it, and the target's weights.
struct Row {
  double total, others, log_p_y, p_y, w_y, v_y;
};

// Conservative bonus without smoothing: the gradient is s (p - e_y), CE's times a per-row multiplier.
template <typename T>
double conservative_row(T* gi, int64_t c, int64_t y, const Row& r, double gap, double scale, bool want_grad) {
  const double m = r.others / r.total, capped = std::max(m, gap);
  const double loss = r.v_y * (std::log(capped) + (m - capped) / gap) - r.w_y * r.log_p_y;
  if (want_grad) {
    const double s = (r.w_y + r.v_y * r.p_y / capped) * scale;
    const T f = T(s / r.total);
    for (int64_t k = 0; k < c; ++k) gi[k] *= f;
    gi[y] = T(-s * m);
  }
  return loss;
}

// Full bonus log(1 - p_y) without smoothing, floored where 1 - p_y < floor; the gradient r p_k / (1 - p_y) off the
// target and -r on it is bounded for any logits. Where the other classes' exponentials underflow (1 - p_y below
// `tiny`), log(1 - p_y) and p_k / (1 - p_y) come from the logits by logsumexp.
template <typename X, typename T>
double full_row(const X* xi, T* gi, int64_t c, int64_t y, const Row& row, double floor, double tiny, double scale,
                bool want_grad) {
  double m = row.others / row.total, log1m = std::log(m), lse_other = 0.0;
  const bool from_logits = !(m > tiny);
  if (from_logits) {
    full_row_from_logits(xi, c, y, &log1m, &lse_other);
    m = std::exp(log1m);
  }
  double bonus = log1m, slope = row.v_y;
  if (floor > 0.0) {  // the clamped bonus is the constant log(floor) where 1 - p_y < floor
    bonus = std::max(log1m, std::log(floor));
    slope = m >= floor ? row.v_y : 0.0;
  }
  if (want_grad) {
    // r over the computed total probability m + p_y (1 up to rounding): its relative error cancels
    const double r = (row.w_y * m + slope * row.p_y) / (m + row.p_y) * scale;
    if (from_logits) {
      for (int64_t k = 0; k < c; ++k) gi[k] = T(r * std::exp(double(xi[k]) - lse_other));
    } else {
      const T f = T(r / row.others);  // p_k / (1 - p_y) = e_k / others
      for (int64_t k = 0; k < c; ++k) gi[k] *= f;
    }
    gi[y] = T(-r);
  }
  return row.v_y * bonus - row.w_y * row.log_p_y;
}

// Conservative bonus with label smoothing eps (q_y = 1 - eps + eps / C, q_k = eps / C): every class's bonus
// b(p_k) = log(1 - u_k) - (p_k - LE)^+ / (1 - LE) with u_k = min(p_k, LE), the target's exact. With
// c_k = q_k (-w_k - rho v_k p_k / (1 - u_k)) the gradient is c - p sum_k c_k, its target column
// c_y (1 - p_y) - p_y sum_{k != y} c_k with the exact 1 - p_y.
template <typename X, typename T>
double smoothed_row(const X* xi, T top, T* gi, int64_t c, int64_t y, const Row& row, const double* w, const double* v,
                    double w_sum, const Options& o, double scale, bool want_grad) {
  const double le = o.log_end, gap = 1.0 - le, rho = o.bonus_scale;
  const double share = o.label_smoothing / double(c), gain = 1.0 - o.label_smoothing + share;
  const T inv_total = T(1.0 / row.total), cap = T(le);
  // p_k, 1 - u_k and p_k / (1 - u_k) of the other classes (the one division per class and pass)
  auto kept_of = [&](T p) { return T(1) - (p < cap ? p : cap); };
  double kept_product = 1.0, log_kept = 0.0, excess = 0.0, ratio_sum = 0.0, weighted_shift = 0.0;
  for (int64_t k = 0; k < c; ++k) {
    weighted_shift += (w ? w[k] : 1.0) * double(T(xi[k]) - top);  // sum_k w_k log p_k = this - W log(total)
    if (k == y) continue;
    const T p = gi[k] * inv_total, kept = kept_of(p);
    const double v_k = v ? v[k] : 1.0;
    // without bonus weights, one log of the product: its factors lie in [1 - LE, 1], it stays above LE (1 - LE)
    if (v) log_kept += v_k * std::log(double(kept)); else kept_product *= double(kept);
    if (p > cap) excess += v_k * (double(p) - le);
    ratio_sum += v_k * double(p / kept);
  }
  if (!v) log_kept = std::log(kept_product);
  const double m = row.others / row.total, capped = std::max(m, gap);
  const double bonus_y = std::log(capped) + (m - capped) / gap;
  const double ce_all = weighted_shift - w_sum * std::log(row.total);
  const double v_y = row.v_y;  // rho v_y
  const double loss = gain * v_y * bonus_y + rho * share * (log_kept - excess / gap) -
                      (1.0 - o.label_smoothing) * row.w_y * row.log_p_y - share * ce_all;
  if (want_grad) {
    // grad_k = (c_k - p_k (c_y + sum_{k != y} c_k)) scale with c_k = -share (rho v_k p_k / (1 - u_k) + w_k)
    const double c_other = -share * (rho * ratio_sum + (w_sum - row.w_y));  // sum_{k != y} c_k
    const double c_y = gain * (-v_y * row.p_y / capped - row.w_y);
    const T a = T(-share * rho * scale), b = T(-(c_other + c_y) * scale), d = T(-share * scale);
    if (!w && !v) {  // float arithmetic in a loop the compiler vectorizes
      for (int64_t k = 0; k < c; ++k) {
        const T p = gi[k] * inv_total;
        gi[k] = a * (p / kept_of(p)) + b * p + d;
      }
    } else {
      for (int64_t k = 0; k < c; ++k) {
        const T p = gi[k] * inv_total;
        gi[k] = a * T(v ? v[k] : 1.0) * (p / kept_of(p)) + b * p + d * T(w ? w[k] : 1.0);
      }
    }
    gi[y] = T((c_y * m - row.p_y * c_other) * scale);
  }
  return loss;
}

template <typename X, typename T>
void rows(const X* x, const T* tops, const int64_t* target, const double* w, const double* v, double w_sum, T* g,
          double* loss, int64_t n, int64_t c, const Options& o, double scale, const double* row_scales,
          bool want_grad) {
  const double tiny = std::is_same<T, double>::value ? 1e-290 : 1e-30;
  at::parallel_for(0, n, row_grain(c), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const X* xi = x + i * c;
      T* gi = g + i * c;
      const int64_t y = target[i];
      if (y == o.ignore_index) {
        loss[i] = 0.0;
        if (want_grad) std::fill(gi, gi + c, T(0));
        continue;
      }
      Row row;
      const double e_y = double(gi[y]);  // gi holds exp(f - max f) (shift_rows, then exp_)
      row.others = row_sum(gi, y) + row_sum(gi + y + 1, c - y - 1);  // not total - e_y: that would cancel
      row.total = row.others + e_y;
      row.log_p_y = double(T(xi[y]) - tops[i]) - std::log(row.total);
      row.p_y = e_y / row.total;
      row.w_y = w ? w[y] : 1.0;
      row.v_y = o.bonus_scale * (v ? v[y] : 1.0);
      const double scale_i = row_scales ? scale * row_scales[i] : scale;
      if (o.label_smoothing > 0.0)
        loss[i] = smoothed_row(xi, tops[i], gi, c, y, row, w, v, w_sum, o, scale_i, want_grad);
      else if (o.log_end == 1.0)
        loss[i] = full_row(xi, gi, c, y, row, o.bonus_floor, tiny, scale_i, want_grad);
      else
        loss[i] = conservative_row(gi, c, y, row, 1.0 - o.log_end, scale_i, want_grad);
    }
  });
}

// g = x - max over each row, and the maxima: the shift by hand; compute then takes the exponential by ATen's
// vectorized exp_ (a scalar exp per element would cost three times as much at large C).
template <typename X, typename T>
void shift_rows(const X* x, T* g, T* tops, int64_t n, int64_t c) {
  at::parallel_for(0, n, row_grain(c), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const X* xi = x + i * c;
      T* gi = g + i * c;
      T top = T(xi[0]);
      for (int64_t k = 1; k < c; ++k) top = T(xi[k]) > top ? T(xi[k]) : top;
      for (int64_t k = 0; k < c; ++k) gi[k] = T(xi[k]) - top;
      tops[i] = top;
    }
  });
}

// Checks the targets (the message of encouraging.losses._checks) and returns the 'mean' denominator.
double check_and_normalizer(const int64_t* t, const double* w, int64_t n, int64_t c, int64_t ignore_index) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = t[i];
    if (y == ignore_index) continue;
    TORCH_CHECK_VALUE(y >= 0 && y < c, "target contains class index ", y, ", outside [0, ", c,
                      ") and not ignore_index=", ignore_index);
    total += w ? w[y] : 1.0;
  }
  return total;
}

std::tuple<at::Tensor, at::Tensor> compute(const at::Tensor& logits, const at::Tensor& target,
                                           const c10::optional<at::Tensor>& class_weight,
                                           const c10::optional<at::Tensor>& bonus_weight, const Options& o,
                                           bool want_grad, const c10::optional<at::Tensor>& row_scale = {},
                                           bool float_loss = false) {
  TORCH_CHECK_VALUE(logits.dim() == 2 && target.dim() == 1 && target.size(0) == logits.size(0),
                    "encouraging_cpu: logits must be (N, C) and target (N,), got ", logits.sizes(), " and ",
                    target.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(logits.scalar_type()),
                    "encouraging_cpu: logits must be floating point, got ", logits.scalar_type());
  TORCH_CHECK_VALUE(logits.device().is_cpu() && target.device().is_cpu(),
                    "encouraging_cpu: logits and target must be CPU tensors, got ", logits.device(), " and ",
                    target.device());
  const at::Tensor t = target.to(at::kLong).contiguous();
  const int64_t n = logits.size(0), c = logits.size(1);
  // the class and bonus weights as float64 CPU vectors of length C
  auto vector = [c](const c10::optional<at::Tensor>& given, const char* name) {
    if (!given.has_value() || !given->defined()) return at::Tensor();
    TORCH_CHECK_VALUE(given->dim() == 1 && given->size(0) == c, name, " must be a 1-D tensor of length C=", c,
                      ", got shape ", given->sizes());
    return given->to(at::kCPU, at::kDouble).contiguous();
  };
  const at::Tensor w = vector(class_weight, "weight"), v = vector(bonus_weight, "bonus_weight");
  const double* wp = w.defined() ? w.data_ptr<double>() : nullptr;
  const double* vp = v.defined() ? v.data_ptr<double>() : nullptr;
  const double w_sum = wp ? w.sum().item<double>() : double(c);
  const double normalizer = check_and_normalizer(t.data_ptr<int64_t>(), wp, n, c, o.ignore_index);
  const double scale = o.reduction == kMean ? 1.0 / normalizer : 1.0;
  // per-row upstream factors of the gradient (loss_and_grad), as float64 (n,)
  const bool has_rows = row_scale.has_value() && row_scale->defined();
  TORCH_CHECK_VALUE(!has_rows || (row_scale->dim() == 1 && row_scale->size(0) == n),
                    "encouraging_cpu: row_scale must be a (", n, ",) tensor");
  const at::Tensor rs = has_rows ? row_scale->to(at::kCPU, at::kDouble).contiguous() : at::Tensor();
  const at::Tensor x = logits.contiguous();
  // float32 rows for half-precision logits (read once, never copied), float64 for float64
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  at::Tensor g = at::empty(x.sizes(), x.options().dtype(acc));  // exp(f - max f), turned into the gradient
  at::Tensor tops = at::empty({n}, x.options().dtype(acc));
  std::vector<double> loss(n);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "encouraging_cpu_shift", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    shift_rows<scalar_t, acc_t>(x.data_ptr<scalar_t>(), g.data_ptr<acc_t>(), tops.data_ptr<acc_t>(), n, c);
  });
  g.exp_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "encouraging_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    rows<scalar_t, acc_t>(x.data_ptr<scalar_t>(), tops.data_ptr<acc_t>(), t.data_ptr<int64_t>(), wp, vp, w_sum,
                          g.data_ptr<acc_t>(), loss.data(), n, c, o, scale,
                          has_rows ? rs.data_ptr<double>() : nullptr, want_grad);
  });
  at::Tensor out;
  if (o.reduction == kNone) {
    out = at::empty({n}, x.options().dtype(float_loss ? acc : x.scalar_type()));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "encouraging_cpu_out", [&] {
      scalar_t* op = out.data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) op[i] = scalar_t(loss[i]);
    });
  } else {
    double total = 0.0;
    for (double l : loss) total += l;
    out = at::scalar_tensor(total * scale, x.options());
  }
  if (want_grad && acc != x.scalar_type()) g = g.to(x.scalar_type());  // the gradient in the logits' dtype
  return {out, want_grad ? g : at::Tensor()};
}

Options options(int64_t ignore_index, int64_t reduction, double label_smoothing, double log_end, double bonus_scale,
                double bonus_floor) {
  return Options{ignore_index, reduction, label_smoothing, log_end, bonus_scale, bonus_floor};
}

using OptionalTensor = c10::optional<at::Tensor>;

at::Tensor loss_cpu(const at::Tensor& logits, const at::Tensor& target, const OptionalTensor& class_weight,
                    const OptionalTensor& bonus_weight, int64_t ignore_index, int64_t reduction,
                    double label_smoothing, double log_end, double bonus_scale, double bonus_floor) {
  const Options o = options(ignore_index, reduction, label_smoothing, log_end, bonus_scale, bonus_floor);
  return std::get<0>(compute(logits, target, class_weight, bonus_weight, o, false));
}

// Forward computes the gradient of the loss and saves it (one (N, C) buffer, as F.cross_entropy saves its
// log-probabilities); backward scales it by the upstream gradient, or hands it on as it is when that is exactly 1.
class EncouragingFunction : public torch::autograd::Function<EncouragingFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target,
                            const OptionalTensor& class_weight, const OptionalTensor& bonus_weight,
                            int64_t ignore_index, int64_t reduction, double label_smoothing, double log_end,
                            double bonus_scale, double bonus_floor) {
    const Options o = options(ignore_index, reduction, label_smoothing, log_end, bonus_scale, bonus_floor);
    auto [loss, grad] = compute(logits, target, class_weight, bonus_weight, o, true);
    ctx->save_for_backward({grad});
    ctx->saved_data["per_element"] = reduction == kNone;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "the compiled encouraging loss is first-order: for second derivatives (create_graph=True) "
                "compute it with impl='autograd'");
    at::Tensor grad = ctx->get_saved_variables()[0];
    const at::Tensor& up = grad_outputs[0];
    at::Tensor out;
    if (ctx->saved_data["per_element"].toBool())
      out = grad * up.unsqueeze(1).to(grad.scalar_type());
    else if (up.item<double>() == 1.0)
      out = grad;  // loss.backward() of the loss itself: the saved gradient is the answer
    else
      out = grad * up.to(grad.scalar_type());
    variable_list grads(10);  // one per forward input; only the logits get one
    grads[0] = out;
    return grads;
  }
};

at::Tensor loss_autograd(const at::Tensor& logits, const at::Tensor& target, const OptionalTensor& class_weight,
                         const OptionalTensor& bonus_weight, int64_t ignore_index, int64_t reduction,
                         double label_smoothing, double log_end, double bonus_scale, double bonus_floor) {
  return EncouragingFunction::apply(logits, target, class_weight, bonus_weight, ignore_index, reduction,
                                    label_smoothing, log_end, bonus_scale, bonus_floor);
}

// Per-row losses (float32 for half-precision logits, float64 for float64) and, with compute_grad, the gradient of
// sum_i row_scale_i L_i (row_scale None: all ones), without autograd: the chunks of linear_encouraging_loss.
std::tuple<at::Tensor, at::Tensor> loss_and_grad_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                     const OptionalTensor& class_weight,
                                                     const OptionalTensor& bonus_weight, int64_t ignore_index,
                                                     double label_smoothing, double log_end, double bonus_scale,
                                                     double bonus_floor, const OptionalTensor& row_scale,
                                                     bool compute_grad) {
  const Options o = options(ignore_index, kNone, label_smoothing, log_end, bonus_scale, bonus_floor);
  auto [loss, grad] = compute(logits, target, class_weight, bonus_weight, o, compute_grad, row_scale, true);
  return {loss, compute_grad ? grad : logits.new_empty({0})};
}

}  // namespace

TORCH_LIBRARY(encouraging_cpu, m) {
  m.def("encouraging_loss(Tensor logits, Tensor target, Tensor? class_weight, Tensor? bonus_weight, "
        "int ignore_index, int reduction, float label_smoothing, float log_end, float bonus_scale, "
        "float bonus_floor) -> Tensor");
  m.def("loss_and_grad(Tensor logits, Tensor target, Tensor? class_weight, Tensor? bonus_weight, "
        "int ignore_index, float label_smoothing, float log_end, float bonus_scale, float bonus_floor, "
        "Tensor? row_scale, bool compute_grad) -> (Tensor, Tensor)");
}
TORCH_LIBRARY_IMPL(encouraging_cpu, CPU, m) {
  m.impl("encouraging_loss", &loss_cpu);
  m.impl("loss_and_grad", &loss_and_grad_cpu);
}
TORCH_LIBRARY_IMPL(encouraging_cpu, Autograd, m) { m.impl("encouraging_loss", &loss_autograd); }
