// The CUDA emulator's scheduler: runs a kernel launch's blocks and threads on the CPU.
//
// What it models, and how:
//   * a launch runs every block before it returns, after the checks a GPU makes at launch: block
//     ≤ 1024 threads (x, y ≤ 1024, z ≤ 64), grid y, z ≤ 65535, the kernel's __launch_bounds__,
//     dynamic shared memory ≤ 48 KiB. A failed check is the launch's error, with the code a GPU
//     returns, and the kernel does not run;
//   * blocks in flight: MTNN_EMU_BLOCKS = k blocks run at once (default 1: one after another), as
//     on a GPU whose SMs hold several. The grid's blocks are taken in an order that can be varied;
//     block j of that order runs in slot j mod k, and a slot starts its next block as soon as its
//     last one has finished (refilling, not waves). A kernel that wrongly relies on blocks running
//     one after another (block b reads what block b − 1 wrote, a plain read-modify-write of a value
//     that several blocks update) then shows it: with fibers as a wrong result, with OS threads as
//     a ThreadSanitizer race (each slot has its own OS threads, and nothing orders one slot's blocks
//     against another's). After a fault no block starts; the blocks in flight run to their end;
//   * a block's threads are either fibers (user-level contexts on one OS thread, switched only at
//     barriers and warp intrinsics: fast, deterministic, with the order in which the runnable
//     threads of all blocks in flight resume chosen by MTNN_EMU_ORDER) or one OS thread per CUDA
//     thread (MTNN_EMU_MODE=threads: slow, but ThreadSanitizer then sees every unsynchronized
//     access to shared memory, or to global memory from two blocks in flight, as a race);
//   * __syncthreads() waits for every thread of the block; __syncwarp, the shuffles and the votes
//     (__ballot_sync, __any_sync, __all_sync) for every lane of the warp. A barrier that cannot
//     complete (a thread exited, or waits at another line), a partial mask, a shuffle from an exited
//     or non-existent lane: each is reported as a fault naming the kernel, line, block and thread,
//     and the launch fails with cudaErrorLaunchFailure (where a GPU would hang or return garbage);
//   * shared memory is allocated per block at its exact size and filled with 0xFF, so
//     AddressSanitizer sees an access past its end and a read before any write shows as garbage.
//
// Environment: MTNN_EMU_MODE = fibers (default; threads under ThreadSanitizer and off x86-64) | threads;
// MTNN_EMU_ORDER = forward (default) | reverse | random, the order of the blocks and of the fibers
// (random reshuffles the runnable fibers of all blocks in flight every round); MTNN_EMU_SEED (for
// random; default 0); MTNN_EMU_BLOCKS (blocks in flight; default 1).
#include <cuda_emu/device.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define MTNN_EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define MTNN_EMU_TSAN 1
#endif

#if MTNN_EMU_TSAN
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

namespace mtnn_emu {

thread_local const ThreadIds* current = nullptr;

// The emulator's own bookkeeping locks the block's mutex where a GPU synchronizes nothing (the
// first use of a __shared__ variable, a thread's exit). ThreadSanitizer would take each of those
// for a happens-before edge between CUDA threads and miss the races they hide; inside an
// IgnoreSync it does not (and it ignores the bookkeeping's own accesses there, which are then
// unordered for it). Barriers and warp intrinsics do synchronize, and are not inside one.
struct IgnoreSync {
#if MTNN_EMU_TSAN
  IgnoreSync() {
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~IgnoreSync() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
  }
#endif
};

const ThreadIds& ids() {
  if (current == nullptr) {
    std::fprintf(stderr, "cuda-emu: threadIdx/blockIdx/blockDim/gridDim used outside a kernel\n");
    std::abort();
  }
  return *current;
}

namespace {

constexpr int kWarp = 32;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // per block, without the opt-in attribute
constexpr size_t kFiberStack = 512 * 1024;

// ---- errors -------------------------------------------------------------------------------------

thread_local cudaError_t last_error = cudaSuccess;
thread_local cudaError_t detail_code = cudaSuccess;
thread_local std::string detail;  // what the emulator found, for the last error it set
thread_local std::string message;

const char* standard_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
  }
}

void set_error(cudaError_t e, const std::string& what) {
  last_error = e;
  detail_code = e;
  detail = what;
  std::fprintf(stderr, "cuda-emu: %s\n", what.c_str());
}

// ---- the block being run ------------------------------------------------------------------------

struct Abort {};  // unwinds a CUDA thread out of its kernel after a fault

struct Block;

struct Thread : ThreadIds {
  Block* block = nullptr;
  int linear = 0, warp = 0, lane = 0;
  bool exited = false;
  // fibers
  void* sp = nullptr;
  void* stack = nullptr;
#if MTNN_EMU_ASAN
  void* fake_stack = nullptr;
#endif
#if MTNN_EMU_TSAN
  void* tsan_fiber = nullptr;
#endif
};

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
  int line = -1;
  const char* name = nullptr;
};

struct Warp {
  int lanes = 0;
  unsigned mask = 0;  // the lanes that exist
  Barrier bar;
  int exited = 0;
  unsigned char slot[kWarp][8];
};

struct Launch {
  Site site;
  Config cfg;
  void (*run)(void*);
  void* body;
  bool threaded;
  // The first fault, which becomes the launch's error. Blocks in flight on OS threads may fault at
  // once, hence the mutex; `failed` is read without it, relaxed, so that checking it before each
  // block gives ThreadSanitizer no happens-before edge from one slot's blocks to another's.
  std::mutex fault_mu;
  cudaError_t fault_code = cudaSuccess;
  std::string fault;
  std::atomic<bool> failed{false};
};

struct Block {
  Launch* launch;
  int n;
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  Barrier bar;
  int exited = 0;
  std::atomic<bool> abort{false};  // set under `mu`, and read without it as a thread starts
  std::map<int, void*> statics;
  size_t static_bytes = 0;
  void* dynamic = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  ~Block() {
    for (auto& [line, p] : statics) std::free(p);
    std::free(dynamic);
  }
};

// The block lock: a real mutex when CUDA threads are OS threads; nothing to do with fibers.
struct Lock {
  std::unique_lock<std::mutex> lk;
  explicit Lock(Block& b) {
    if (b.launch->threaded) lk = std::unique_lock<std::mutex>(b.mu);
  }
};

Thread& self() {
  if (current == nullptr) {
    std::fprintf(stderr, "cuda-emu: a device intrinsic was called outside a kernel\n");
    std::abort();
  }
  return *static_cast<Thread*>(const_cast<ThreadIds*>(current));
}

std::string where(const Thread& t, int line) {
  std::ostringstream s;
  s << t.block->launch->site.kernel << " at line " << line << ", block (" << t.block_idx.x << "," << t.block_idx.y
    << "," << t.block_idx.z << ") thread (" << t.thread_idx.x << "," << t.thread_idx.y << "," << t.thread_idx.z
    << ")";
  return s.str();
}

// Records the launch's first fault and stops the block: every thread waiting anywhere unwinds.
void record_fault(Block& b, cudaError_t code, const std::string& what) {
  Launch& L = *b.launch;
  {
    std::lock_guard<std::mutex> lk(L.fault_mu);
    if (L.fault.empty()) {
      L.fault_code = code;
      L.fault = what;
    }
  }
  L.failed.store(true, std::memory_order_relaxed);
  b.abort = true;
  b.cv.notify_all();
}

[[noreturn]] void fault(Block& b, const std::string& what, cudaError_t code = cudaErrorLaunchFailure) {
  record_fault(b, code, what);
  throw Abort{};
}

// ---- fibers -------------------------------------------------------------------------------------
//
// A hand-written context switch (x86-64 System V): push the callee-saved registers and the
// floating-point control words, swap stack pointers, pop. A new fiber's stack is laid out so that
// the first switch "returns" into fiber_start, which calls fiber_main(thread).

thread_local void* scheduler_sp = nullptr;
#if MTNN_EMU_ASAN
thread_local const void* scheduler_stack_bottom = nullptr;
thread_local size_t scheduler_stack_size = 0;
#endif
#if MTNN_EMU_TSAN
thread_local void* scheduler_tsan_fiber = nullptr;
#endif

}  // namespace
}  // namespace mtnn_emu

extern "C" void mtnn_emu_switch(void** save_sp, void* load_sp);
extern "C" void mtnn_emu_fiber_start();

#if defined(__x86_64__)
asm(R"(
  .text
  .globl mtnn_emu_switch
  .type mtnn_emu_switch, @function
mtnn_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mtnn_emu_switch, .-mtnn_emu_switch

  .globl mtnn_emu_fiber_start
  .type mtnn_emu_fiber_start, @function
mtnn_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size mtnn_emu_fiber_start, .-mtnn_emu_fiber_start
)");
#else
// Only x86-64 has a context switch here: elsewhere CUDA threads are OS threads (see options()).
extern "C" void mtnn_emu_switch(void**, void*) {
  std::fprintf(stderr, "cuda-emu: fibers need x86-64; use MTNN_EMU_MODE=threads\n");
  std::abort();
}
extern "C" void mtnn_emu_fiber_start() { std::abort(); }
#endif

namespace mtnn_emu {
namespace {

void run_thread(Thread& t);

[[noreturn]] void fiber_main(Thread* t) {
#if MTNN_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_bottom, &scheduler_stack_size);
#endif
  run_thread(*t);
  void* unused;
#if MTNN_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, scheduler_stack_bottom, scheduler_stack_size);  // this fiber is done
#endif
#if MTNN_EMU_TSAN
  __tsan_switch_to_fiber(scheduler_tsan_fiber, 0);
#endif
  mtnn_emu_switch(&unused, scheduler_sp);
  __builtin_unreachable();
}

// Back to the scheduler, from a fiber waiting at a barrier.
void yield_fiber(Thread& t) {
#if MTNN_EMU_ASAN
  __sanitizer_start_switch_fiber(&t.fake_stack, scheduler_stack_bottom, scheduler_stack_size);
#endif
#if MTNN_EMU_TSAN
  __tsan_switch_to_fiber(scheduler_tsan_fiber, 0);
#endif
  mtnn_emu_switch(&t.sp, scheduler_sp);
#if MTNN_EMU_ASAN
  __sanitizer_finish_switch_fiber(t.fake_stack, &scheduler_stack_bottom, &scheduler_stack_size);
#endif
}

// From the scheduler into fiber t, until it waits or finishes.
void resume_fiber(Thread& t) {
  current = &t;
#if MTNN_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack, kFiberStack);
#endif
#if MTNN_EMU_TSAN
  __tsan_switch_to_fiber(t.tsan_fiber, 0);
#endif
  mtnn_emu_switch(&scheduler_sp, t.sp);
#if MTNN_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  current = nullptr;
}

// Fiber stacks, reused across blocks and launches; a guard page below each catches an overflow.
thread_local std::vector<void*> stack_pool;

void* fiber_stack(size_t i) {
  while (stack_pool.size() <= i) {
    const size_t page = 4096;
    void* p = mmap(nullptr, kFiberStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
      std::perror("cuda-emu: mmap of a fiber stack");
      std::abort();
    }
    mprotect(p, page, PROT_NONE);
    stack_pool.push_back(static_cast<char*>(p) + page);
  }
  return stack_pool[i];
}

void init_fiber(Thread& t, void* stack) {
  t.stack = stack;
#if MTNN_EMU_ASAN
  __asan_unpoison_memory_region(stack, kFiberStack);  // the redzones of the frames of its last use
#endif
  auto top = reinterpret_cast<uintptr_t>(stack) + kFiberStack;
  const uintptr_t after_ret = (top & ~uintptr_t{15}) - 16;  // 16-aligned when fiber_start runs
  auto* frame = reinterpret_cast<uint64_t*>(after_ret - 64);
  const uint32_t mxcsr = 0x1F80;
  const uint16_t fpucw = 0x037F;
  std::memcpy(&frame[0], &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(&frame[0]) + 4, &fpucw, 2);
  frame[1] = 0;                                               // r15
  frame[2] = 0;                                               // r14
  frame[3] = reinterpret_cast<uint64_t>(&fiber_main);         // r13: what fiber_start calls
  frame[4] = reinterpret_cast<uint64_t>(&t);                  // r12: its argument
  frame[5] = 0;                                               // rbx
  frame[6] = 0;                                               // rbp
  frame[7] = reinterpret_cast<uint64_t>(&mtnn_emu_fiber_start);  // the switch's `ret` goes here
  t.sp = frame;
#if MTNN_EMU_TSAN
  t.tsan_fiber = __tsan_create_fiber(0);
#endif
}

// ---- waiting ------------------------------------------------------------------------------------

// Threads stuck in a barrier or warp intrinsic (arrived, not yet released).
int blocked(const Block& b) {
  int n = b.bar.arrived;
  for (const Warp& w : b.warps) n += w.bar.arrived;
  return n;
}

// Every thread still running is waiting for another: nothing can move again.
void check_deadlock(Block& b, const Thread& t, int line) {
  const int stuck = blocked(b);
  if (stuck == 0 || stuck + b.exited < b.n) return;
  std::ostringstream s;
  s << "deadlock in " << where(t, line) << ": ";
  if (b.bar.arrived > 0)
    s << b.bar.arrived << " of " << b.n << " threads wait at " << b.bar.name << " (line " << b.bar.line << ")";
  for (size_t w = 0; w < b.warps.size(); ++w) {
    if (b.warps[w].bar.arrived > 0)
      s << "; warp " << w << ": " << b.warps[w].bar.arrived << " of " << b.warps[w].lanes << " lanes wait at "
        << b.warps[w].bar.name << " (line " << b.warps[w].bar.line << ")";
  }
  if (b.exited > 0) s << "; " << b.exited << " threads have exited";
  fault(b, s.str());
}

template <typename Pred>
void wait_until(Block& b, Lock& lock, Thread& t, Pred done) {
  if (b.launch->threaded) {
    b.cv.wait(lock.lk, [&] { return done() || b.abort; });
  } else {
    while (!done() && !b.abort) yield_fiber(t);
  }
  if (b.abort) throw Abort{};
}

// Arrive at `bar` with `expected` participants; returns when all have arrived.
void arrive(Block& b, Lock& lock, Thread& t, Barrier& bar, int expected, int line, const char* name) {
  if (bar.arrived == 0) {
    bar.line = line;
    bar.name = name;
  } else if (bar.line != line || std::strcmp(bar.name, name) != 0) {
    std::ostringstream s;
    s << name << " in " << where(t, line) << " while other threads wait at " << bar.name << " (line " << bar.line
      << "): divergent barrier";
    fault(b, s.str());
  }
  if (++bar.arrived == expected) {
    bar.arrived = 0;
    ++bar.generation;
    b.cv.notify_all();
    return;
  }
  const uint64_t gen = bar.generation;
  check_deadlock(b, t, line);
  wait_until(b, lock, t, [&] { return bar.generation != gen; });
}

void run_thread(Thread& t) {
  Block& b = *t.block;
  try {
    if (!b.abort) b.launch->run(b.launch->body);
  } catch (const Abort&) {
  } catch (const std::exception& e) {
    Lock lock(b);
    record_fault(b, cudaErrorLaunchFailure, std::string("exception in ") + where(t, b.launch->site.line) + ": " +
                                               e.what());
  }
  [[maybe_unused]] const IgnoreSync quiet;
  Lock lock(b);
  t.exited = true;
  ++b.exited;
  Warp& w = b.warps[t.warp];
  ++w.exited;
  if (b.abort) return;
  if (b.bar.arrived > 0) {
    std::ostringstream s;
    s << "thread exits in " << where(t, b.bar.line) << " while " << b.bar.arrived << " threads wait at "
      << b.bar.name << " (line " << b.bar.line << "): a barrier not reached by every thread";
    record_fault(b, cudaErrorLaunchFailure, s.str());
  } else if (w.bar.arrived > 0) {
    std::ostringstream s;
    s << "lane " << t.lane << " exits in " << where(t, w.bar.line) << " while " << w.bar.arrived
      << " lanes wait for it at " << w.bar.name << " (line " << w.bar.line << ")";
    record_fault(b, cudaErrorLaunchFailure, s.str());
  } else if (const int stuck = blocked(b); stuck > 0 && stuck + b.exited == b.n) {
    try {
      check_deadlock(b, t, b.launch->site.line);
    } catch (const Abort&) {
    }
  }
}

// ---- a block --------------------------------------------------------------------------------------

// One OS thread per CUDA thread of a block, kept for every block a slot runs in a launch. Worker i
// runs thread i of each of the slot's blocks in turn. Each worker is started through a mutex of its
// own and reports back through another, so ThreadSanitizer sees no happens-before edge from one
// worker's end of a block to another's start of it (which would hide a race whenever one runs
// before the other).
class Workers {
 public:
  explicit Workers(int n) : n_(n), slots_(n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this, i] { work(i); });
  }
  ~Workers() {
    for (Slot& slot : slots_) {
      {
        std::lock_guard<std::mutex> lk(slot.mu);
        slot.quit = true;
      }
      slot.cv.notify_one();
    }
    for (auto& t : threads_) t.join();
  }
  void run(Block& b) {
    {
      std::lock_guard<std::mutex> lk(done_mu_);
      done_ = 0;
    }
    for (Slot& slot : slots_) {
      {
        std::lock_guard<std::mutex> lk(slot.mu);
        slot.block = &b;
        ++slot.generation;
      }
      slot.cv.notify_one();
    }
    std::unique_lock<std::mutex> lk(done_mu_);
    done_cv_.wait(lk, [&] { return done_ == n_; });
  }

 private:
  struct Slot {
    std::mutex mu;
    std::condition_variable cv;
    Block* block = nullptr;
    uint64_t generation = 0;
    bool quit = false;
  };
  void work(int i) {
    Slot& slot = slots_[i];
    uint64_t seen = 0;
    for (;;) {
      Block* b;
      {
        std::unique_lock<std::mutex> lk(slot.mu);
        slot.cv.wait(lk, [&] { return slot.quit || slot.generation != seen; });
        if (slot.quit) return;
        seen = slot.generation;
        b = slot.block;
      }
      current = &b->threads[i];
      run_thread(b->threads[i]);
      current = nullptr;
      std::lock_guard<std::mutex> lk(done_mu_);
      if (++done_ == n_) done_cv_.notify_one();
    }
  }
  int n_;
  std::vector<Slot> slots_;
  std::vector<std::thread> threads_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  int done_ = 0;
};

dim3 block_index(dim3 g, uint64_t i) {
  return dim3(static_cast<unsigned>(i % g.x), static_cast<unsigned>(i / g.x % g.y),
              static_cast<unsigned>(i / (uint64_t{g.x} * g.y)));
}

// Sets up block `idx` of the launch: its threads' indices, its warps, its dynamic shared memory.
void init_block(Block& b, Launch& L, dim3 idx) {
  b.launch = &L;
  const dim3 bd = L.cfg.block;
  b.n = static_cast<int>(bd.x * bd.y * bd.z);
  b.threads.resize(b.n);
  b.warps.resize((b.n + kWarp - 1) / kWarp);
  for (size_t w = 0; w < b.warps.size(); ++w) {
    b.warps[w].lanes = std::min(kWarp, b.n - static_cast<int>(w) * kWarp);
    b.warps[w].mask = b.warps[w].lanes == kWarp ? 0xffffffffu : (1u << b.warps[w].lanes) - 1;
  }
  // Exactly cfg.smem bytes (malloc(0) for none: any access is past the end).
  b.dynamic = std::malloc(L.cfg.smem);
  if (L.cfg.smem > 0) std::memset(b.dynamic, 0xFF, L.cfg.smem);
  for (int i = 0; i < b.n; ++i) {
    Thread& t = b.threads[i];
    t.block = &b;
    t.linear = i;
    t.warp = i / kWarp;
    t.lane = i % kWarp;
    t.thread_idx = uint3{static_cast<unsigned>(i) % bd.x, static_cast<unsigned>(i) / bd.x % bd.y,
                         static_cast<unsigned>(i) / (bd.x * bd.y)};
    t.block_idx = uint3{idx.x, idx.y, idx.z};
    t.block_dim = bd;
    t.grid_dim = L.cfg.grid;
  }
}

// Fibers: the k blocks in flight share this OS thread. Slot s runs blocks s, s + k, s + 2k, ... of
// `order` (linear block indices), each started as soon as the slot's last one has finished; its
// fibers use stacks s·n .. s·n + n − 1 of the pool. A round resumes every live fiber of every block
// in flight once, in the order asked for (0 forward: slot by slot, thread by thread; 1 reverse;
// 2 random, reshuffled every round, so the fibers of different blocks interleave).
void run_fibers(Launch& L, const std::vector<uint64_t>& order, int k, int order_kind, std::mt19937_64& rng) {
#if MTNN_EMU_TSAN
  scheduler_tsan_fiber = __tsan_get_current_fiber();
#endif
  const dim3 bd = L.cfg.block;
  const int n = static_cast<int>(bd.x * bd.y * bd.z);
  std::vector<std::unique_ptr<Block>> slot(k);
  std::vector<uint64_t> next(k);  // the position in `order` of the slot's next block
  auto start_next = [&](int s) {
    if (slot[s] != nullptr) {
#if MTNN_EMU_TSAN
      for (Thread& t : slot[s]->threads) __tsan_destroy_fiber(t.tsan_fiber);
#endif
      slot[s].reset();
    }
    if (next[s] >= order.size() || L.failed.load(std::memory_order_relaxed)) return;
    slot[s] = std::make_unique<Block>();
    init_block(*slot[s], L, block_index(L.cfg.grid, order[next[s]]));
    next[s] += k;
    for (int i = 0; i < n; ++i) init_fiber(slot[s]->threads[i], fiber_stack(static_cast<size_t>(s) * n + i));
  };
  for (int s = 0; s < k; ++s) {
    next[s] = s;
    start_next(s);
  }
  std::vector<Thread*> runnable;
  for (;;) {
    runnable.clear();
    for (auto& b : slot) {
      if (b == nullptr) continue;
      for (Thread& t : b->threads)
        if (!t.exited) runnable.push_back(&t);
    }
    if (runnable.empty()) return;
    if (order_kind == 1) std::reverse(runnable.begin(), runnable.end());
    if (order_kind == 2) std::shuffle(runnable.begin(), runnable.end(), rng);
    for (Thread* t : runnable) resume_fiber(*t);
    for (int s = 0; s < k; ++s) {
      if (slot[s] != nullptr && slot[s]->exited == n) start_next(s);
    }
  }
}

// OS threads: slot s (one of k, each on a thread of its own) runs blocks s, s + k, s + 2k, ... of
// `order` one after another, on workers of its own. Nothing passes between slots (no lock, no
// shared counter), so for ThreadSanitizer no block of one slot is ordered against any of another.
void run_slot(Launch& L, const std::vector<uint64_t>& order, int s, int k) {
  const dim3 bd = L.cfg.block;
  Workers workers(static_cast<int>(bd.x * bd.y * bd.z));
  for (uint64_t j = s; j < order.size() && !L.failed.load(std::memory_order_relaxed); j += k) {
    Block b;
    init_block(b, L, block_index(L.cfg.grid, order[j]));
    workers.run(b);
  }
}

struct Options {
  bool threads;
  int order;  // 0 forward, 1 reverse, 2 random
  uint64_t seed;
  int blocks;  // in flight
};

Options options() {
  Options o{false, 0, 0, 1};
#if MTNN_EMU_TSAN || !defined(__x86_64__)
  o.threads = true;
#endif
  if (const char* m = std::getenv("MTNN_EMU_MODE")) {
    if (std::string(m) == "threads") o.threads = true;
#if defined(__x86_64__)
    else if (std::string(m) == "fibers") o.threads = false;
#endif
  }
  if (const char* r = std::getenv("MTNN_EMU_ORDER")) {
    if (std::string(r) == "reverse") o.order = 1;
    else if (std::string(r) == "random") o.order = 2;
  }
  if (const char* s = std::getenv("MTNN_EMU_SEED")) o.seed = std::strtoull(s, nullptr, 10);
  if (const char* k = std::getenv("MTNN_EMU_BLOCKS")) o.blocks = std::max(1, std::atoi(k));
  return o;
}

}  // namespace

// ---- the runtime API (errors, synchronization) -------------------------------------------------------

}  // namespace mtnn_emu

extern "C" {
cudaError_t cudaGetLastError() {
  const cudaError_t e = mtnn_emu::last_error;
  mtnn_emu::last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return mtnn_emu::last_error; }
cudaError_t cudaDeviceSynchronize() { return mtnn_emu::last_error; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return mtnn_emu::last_error; }

const char* cudaGetErrorString(cudaError_t e) {
  using namespace mtnn_emu;
  if (e != cudaSuccess && e == detail_code && !detail.empty()) {
    message = std::string(standard_string(e)) + " [cuda-emu: " + detail + "]";
    return message.c_str();
  }
  return standard_string(e);
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}
}  // extern "C"

namespace mtnn_emu {

// ---- launches, shared memory, barriers and shuffles: what the rewritten kernels call -----------------

void launch_impl(const Site& site, const Config& cfg, void (*run)(void*), void* body) {
  if (current != nullptr) {
    std::fprintf(stderr, "cuda-emu: a launch from inside a kernel (dynamic parallelism) is not emulated\n");
    std::abort();
  }
  const dim3 g = cfg.grid, bd = cfg.block;
  std::ostringstream s;
  s << "launch of " << site.kernel << " at line " << site.line << " with grid (" << g.x << "," << g.y << "," << g.z
    << "), block (" << bd.x << "," << bd.y << "," << bd.z << "), " << cfg.smem << " bytes of dynamic shared memory: ";
  const uint64_t threads = uint64_t{bd.x} * bd.y * bd.z;
  if (bd.x == 0 || bd.y == 0 || bd.z == 0 || bd.x > 1024 || bd.y > 1024 || bd.z > 64 || threads > 1024) {
    set_error(cudaErrorInvalidConfiguration, s.str() + "a block has 1 to 1024 threads (x, y ≤ 1024, z ≤ 64)");
    return;
  }
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    set_error(cudaErrorInvalidConfiguration, s.str() + "grid x ≤ 2^31 − 1, y and z ≤ 65535, none 0");
    return;
  }
  if (site.max_threads != 0 && threads > site.max_threads) {
    set_error(cudaErrorLaunchOutOfResources,
              s.str() + "more threads than the kernel's __launch_bounds__(" + std::to_string(site.max_threads) + ")");
    return;
  }
  if (cfg.smem > kMaxSharedBytes) {
    set_error(cudaErrorInvalidValue, s.str() + "more than 48 KiB of shared memory per block");
    return;
  }
  const Options opt = options();
  Launch L{site, cfg, run, body, opt.threads};
  std::mt19937_64 rng(opt.seed);
  std::vector<uint64_t> order(uint64_t{g.x} * g.y * g.z);  // linear block indices, in the order they start
  std::iota(order.begin(), order.end(), 0);
  if (opt.order == 1) std::reverse(order.begin(), order.end());
  if (opt.order == 2) std::shuffle(order.begin(), order.end(), rng);
  const int k = static_cast<int>(std::min<uint64_t>(opt.blocks, order.size()));
  if (L.threaded) {
    std::vector<std::thread> slots;
    for (int s = 0; s < k; ++s) slots.emplace_back(run_slot, std::ref(L), std::cref(order), s, k);
    for (std::thread& slot : slots) slot.join();
  } else {
    run_fibers(L, order, k, opt.order, rng);
  }
  if (!L.fault.empty()) set_error(L.fault_code, L.fault);
}

void* shared_static(int line, size_t bytes, size_t align) {
  Thread& t = self();
  Block& b = *t.block;
  [[maybe_unused]] const IgnoreSync quiet;
  Lock lock(b);
  auto it = b.statics.find(line);
  if (it != b.statics.end()) return it->second;
  b.static_bytes += bytes;
  if (b.static_bytes + b.launch->cfg.smem > kMaxSharedBytes) {
    std::ostringstream s;
    s << "__shared__ memory of " << where(t, line) << ": " << b.static_bytes << " bytes static + "
      << b.launch->cfg.smem << " dynamic exceed the 48 KiB a block may have";
    fault(b, s.str(), cudaErrorInvalidValue);
  }
  void* p = nullptr;
  if (posix_memalign(&p, std::max<size_t>(align, sizeof(void*)), bytes) != 0) std::abort();
  std::memset(p, 0xFF, bytes);
  b.statics.emplace(line, p);
  return p;
}

void* shared_dynamic() { return self().block->dynamic; }

void syncthreads(int line) {
  Thread& t = self();
  Block& b = *t.block;
  Lock lock(b);
  if (b.abort) throw Abort{};
  if (b.exited > 0) {
    std::ostringstream s;
    s << "__syncthreads() in " << where(t, line) << " after " << b.exited
      << " threads of the block have exited: a barrier not reached by every thread";
    fault(b, s.str());
  }
  arrive(b, lock, t, b.bar, b.n, line, "__syncthreads()");
}

namespace {
void check_mask(Block& b, Thread& t, Warp& w, unsigned mask, int line, const char* name) {
  if (mask != w.mask) {
    std::ostringstream s;
    s << name << " in " << where(t, line) << " with mask 0x" << std::hex << mask << " but the warp's lanes are 0x"
      << w.mask << std::dec << ": a partial mask, or one naming lanes that do not exist, is not emulated";
    fault(b, s.str());
  }
  if (w.exited > 0) {
    std::ostringstream s;
    s << name << " in " << where(t, line) << ": " << w.exited << " lanes of the mask have exited";
    fault(b, s.str());
  }
}
}  // namespace

void syncwarp(int line, unsigned mask) {
  Thread& t = self();
  Block& b = *t.block;
  Lock lock(b);
  if (b.abort) throw Abort{};
  Warp& w = b.warps[t.warp];
  check_mask(b, t, w, mask, line, "__syncwarp");
  arrive(b, lock, t, w.bar, w.lanes, line, "__syncwarp");
}

void shfl(int line, const char* name, unsigned mask, Shfl kind, int arg, int width, void* value, size_t bytes) {
  Thread& t = self();
  Block& b = *t.block;
  Lock lock(b);
  if (b.abort) throw Abort{};
  Warp& w = b.warps[t.warp];
  check_mask(b, t, w, mask, line, name);
  if (width <= 0 || width > kWarp || (width & (width - 1)) != 0) {
    fault(b, std::string(name) + " in " + where(t, line) + ": width " + std::to_string(width) +
                 " is not a power of two ≤ 32");
  }
  const int base = t.lane & ~(width - 1);
  int src = t.lane;
  switch (kind) {
    case Shfl::Idx: src = base + (arg % width + width) % width; break;
    case Shfl::Up: src = t.lane - arg >= base ? t.lane - arg : t.lane; break;
    case Shfl::Down: src = t.lane + arg < base + width ? t.lane + arg : t.lane; break;
    case Shfl::Xor: src = (t.lane ^ arg) < base + width ? (t.lane ^ arg) : t.lane; break;
  }
  if (src >= w.lanes) {
    fault(b, std::string(name) + " in " + where(t, line) + ": reads lane " + std::to_string(src) +
                 ", which does not exist (the warp has " + std::to_string(w.lanes) + " lanes)");
  }
  std::memcpy(w.slot[t.lane], value, bytes);
  arrive(b, lock, t, w.bar, w.lanes, line, name);  // every lane's value is in
  std::memcpy(value, w.slot[src], bytes);
  arrive(b, lock, t, w.bar, w.lanes, line, name);  // every lane has read before any writes again
}

unsigned vote(int line, const char* name, unsigned mask, bool pred) {
  Thread& t = self();
  Block& b = *t.block;
  Lock lock(b);
  if (b.abort) throw Abort{};
  Warp& w = b.warps[t.warp];
  check_mask(b, t, w, mask, line, name);
  w.slot[t.lane][0] = pred;
  arrive(b, lock, t, w.bar, w.lanes, line, name);  // every lane's vote is in
  unsigned ballot = 0;
  for (int lane = 0; lane < w.lanes; ++lane) ballot |= unsigned{w.slot[lane][0]} << lane;
  arrive(b, lock, t, w.bar, w.lanes, line, name);  // every lane has counted before any votes again
  return ballot;
}

}  // namespace mtnn_emu
