// The failure counter and check of the emulation programs (check_*.cpp): each failed
// expectation is printed and counted, and main() returns nonzero when any failed.
#pragma once

#include <cstdio>
#include <string>

namespace emulation {

inline int failures = 0;

inline void expect(bool condition, const std::string& what) {
  if (!condition) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

}  // namespace emulation
