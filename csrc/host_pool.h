// A cache of large host blocks for the mixed op's CPU gradients, torch-free.
//
// A DARTS node's backward writes up to E*K gradients of one activation's size; at the
// paper's CIFAR shapes that is 35 x 4 MiB per node and call. Freed, glibc hands such blocks
// back to the system, and the next call pays a page fault per 4 KiB on first touch, more
// than the kernel itself (pynas bench ops: the C16x32x32 cell ran 3.3x slower). The pool
// keeps released blocks for the next request instead (up to a limit: cached blocks are
// resident memory the process holds).
#pragma once

#include <cstddef>

namespace pynas {

// A block of at least `bytes` bytes, 64-byte aligned, and its capacity (the size to give
// back); nullptr when the system has no memory. Thread-safe.
void* host_pool_acquire(size_t bytes, size_t* capacity);

// Gives a block back: kept for reuse while the cached total stays within the limit, freed
// otherwise. Thread-safe; may be called from any thread.
void host_pool_release(void* block, size_t capacity);

// Bytes of released blocks held for reuse, and the most it holds (default 512 MiB).
size_t host_pool_cached_bytes();
size_t host_pool_limit();
void host_pool_set_limit(size_t bytes);  // frees cached blocks beyond the new limit

// Frees every cached block (blocks in use are not affected).
void host_pool_empty();

}  // namespace pynas
