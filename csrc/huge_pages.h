// huge_pages(): ask the OS to back a new CPU output with 2 MiB pages. Used by the fused norm ops'
// outputs (norm_act_plan.h); the benchmark measures what it saves (benchmarks/norm_act.py).
#pragma once

#include <ATen/core/Tensor.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace minitorch_nn {

// A new output tensor, with the OS asked to back it with 2 MiB pages (CPU tensors only).
//
// An output of 32 MiB or more is a fresh mapping from the OS (glibc hands such blocks out with
// mmap and returns them on free), so the kernel's first write to each 4 KiB page takes a page
// fault: 8192 faults for 32 MiB, which on the 2-core benchmark machine cost more than reading
// and writing the data (13 ms against 3.4 ms for a copy into mapped memory). madvise(MADV_HUGEPAGE)
// before the first touch lets the 2 MiB-aligned interior fault in 2 MiB at a time, 512 times
// fewer faults. It is a hint: where transparent huge pages are off it fails, harmlessly, and
// memory the allocator recycles is already mapped. torch can do the same for its own allocations
// (THP_MEM_ALLOC_ENABLE=1); the benchmark reports the copy floor both ways.
inline at::Tensor huge_pages(at::Tensor t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kPage = 4096;
  if (t.is_cpu() && t.nbytes() >= (uintptr_t{4} << 20)) {
    const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t start = (p + kPage - 1) & ~(kPage - 1), end = (p + t.nbytes()) & ~(kPage - 1);
    (void)madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
  }
#endif
  return t;
}

}  // namespace minitorch_nn
