// Numerically stable pieces of the logistic loss, shared by the solvers and the evaluation.
#pragma once

#include <cmath>

namespace pserver::linear {

// 1 / (1 + exp(-z)) without overflow.
inline double Sigmoid(double z) {
  if (z >= 0) return 1 / (1 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1 + e);
}

// log(1 + exp(z)) without overflow: the logistic loss of margin -z.
inline double Log1pExp(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

}  // namespace pserver::linear
