// The host block cache of host_pool.h: capacities in 2 MiB steps; a request takes the
// smallest cached block that holds it and wastes at most half of it (a node's backward
// after a larger one reuses that one's block instead of keeping a block per size).
#include "../host_pool.h"

#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <vector>

namespace pynas {
namespace {

constexpr size_t kGranule = size_t{2} << 20;  // capacities are multiples of 2 MiB
constexpr size_t kAlignment = 64;

class HostPool {
 public:
  void* acquire(size_t bytes, size_t* capacity) {
    *capacity = (bytes + kGranule - 1) / kGranule * kGranule;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = free_.lower_bound(*capacity);
      if (found != free_.end() && found->first <= 2 * *capacity) {
        *capacity = found->first;
        void* block = found->second.back();
        found->second.pop_back();
        if (found->second.empty()) free_.erase(found);
        cached_ -= *capacity;
        return block;
      }
    }
    return std::aligned_alloc(kAlignment, *capacity);
  }

  void release(void* block, size_t capacity) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + capacity <= limit_) {
        free_[capacity].push_back(block);
        cached_ += capacity;
        return;
      }
    }
    std::free(block);
  }

  size_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  size_t limit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }

  // Frees cached blocks, largest first, until the cached total is within `keep` bytes.
  void trim(size_t keep, bool set_limit) {
    std::vector<void*> freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (set_limit) limit_ = keep;
      for (auto size_class = free_.rbegin(); size_class != free_.rend() && cached_ > keep;
           ++size_class) {
        while (!size_class->second.empty() && cached_ > keep) {
          freed.push_back(size_class->second.back());
          size_class->second.pop_back();
          cached_ -= size_class->first;
        }
      }
      for (auto size_class = free_.begin(); size_class != free_.end();)
        size_class = size_class->second.empty() ? free_.erase(size_class) : std::next(size_class);
    }
    for (void* block : freed) std::free(block);
  }

 private:
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;  // capacity -> released blocks
  size_t cached_ = 0;
  size_t limit_ = size_t{512} << 20;
};

// Never destroyed: a tensor still alive at interpreter exit may release its block after
// static destructors have run.
HostPool& pool() {
  static HostPool* instance = new HostPool();
  return *instance;
}

}  // namespace

void* host_pool_acquire(size_t bytes, size_t* capacity) { return pool().acquire(bytes, capacity); }
void host_pool_release(void* block, size_t capacity) { pool().release(block, capacity); }
size_t host_pool_cached_bytes() { return pool().cached(); }
size_t host_pool_limit() { return pool().limit(); }
void host_pool_set_limit(size_t bytes) { pool().trim(bytes, /*set_limit=*/true); }
void host_pool_empty() { pool().trim(0, /*set_limit=*/false); }

}  // namespace pynas
