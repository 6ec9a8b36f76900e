// A parameter, or a contiguous range of its elements: the unit that data parallelism shards
// (ZeRO-1) and that the optimizer updates (train/optimizer.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace deepthin::dist {

// A parameter, or elements [begin, end) of its flattened view.
struct ParamSlice {
  std::string name;
  at::Tensor param;
  int64_t begin = 0;
  int64_t end = -1;  // -1: to the end of the parameter
};

}  // namespace deepthin::dist
