// Precompiled header: the heavy LibTorch and standard headers, parsed once per target instead of
// once per translation unit (a TU including torch/torch.h alone costs ~15 s on the 2-core CI
// machine). Sources still include the narrow headers they use; this file only makes that cheap.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>
