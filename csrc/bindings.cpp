// The only C++ file that knows Python: binds the torch-free kernels as `pynas._C`.
// Tensors arrive as raw addresses (ints) from pynas/ops; every status becomes an
// exception here, in one place.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "host_pool.h"
#include "mixed_op.h"
#include "partial_channel.h"
#include "rollout.h"
#include "sampling.h"

namespace py = pybind11;

namespace {

// The CUDA kernels leave a reason for every failed status in last_cuda_error().
std::string reason(bool cuda) {
#ifdef PYNAS_WITH_CUDA
  if (cuda) return std::string(": ") + pynas::last_cuda_error();
#endif
  static_cast<void>(cuda);
  return "";
}

void check(pynas::Status status, const char* what, bool cuda) {
  switch (status) {
    case pynas::Status::kOk:
      return;
    case pynas::Status::kInvalidArgument:
      throw py::value_error(std::string(what) + ": invalid sizes, counts or pointers" +
                            reason(cuda));
    case pynas::Status::kUnsupportedDType:
      throw py::type_error(std::string(what) + ": dtype not supported by this backend");
    case pynas::Status::kCudaError:
      throw std::runtime_error(std::string(what) + ": CUDA error" + reason(cuda));
  }
  throw std::runtime_error(std::string(what) + ": unknown status");
}

template <typename Pointer>
std::vector<Pointer> as_pointers(const std::vector<uintptr_t>& addresses) {
  std::vector<Pointer> pointers(addresses.size());
  for (size_t i = 0; i < addresses.size(); ++i)
    pointers[i] = reinterpret_cast<Pointer>(addresses[i]);
  return pointers;
}

// ---- host blocks handed to torch through DLPack ----
// The DLPack ABI (the legacy `DLManagedTensor` that a capsule named "dltensor" carries),
// declared here from its specification: torch.from_dlpack takes the capsule, renames it
// "used_dltensor", and calls `deleter` once the last tensor viewing the block is gone.
struct DLDevice {
  int32_t device_type;  // kDLCPU = 1
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // kDLUInt = 1
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // nullptr: compact row-major
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

// One pooled block as a DLPack uint8 vector of `bytes` elements.
struct PooledBlock {
  DLManagedTensor managed;
  int64_t shape[1];
  size_t capacity;
};

void release_pooled_block(DLManagedTensor* managed) {
  auto* block = static_cast<PooledBlock*>(managed->manager_ctx);
  pynas::host_pool_release(managed->dl_tensor.data, block->capacity);
  delete block;
}

py::capsule pooled_host_block(int64_t bytes) {
  if (bytes < 1) throw py::value_error("pooled_host_block: bytes must be positive");
  auto* block = new PooledBlock();
  void* data = pynas::host_pool_acquire(static_cast<size_t>(bytes), &block->capacity);
  if (data == nullptr) {
    delete block;
    throw std::bad_alloc();
  }
  block->shape[0] = bytes;
  block->managed.dl_tensor = {data, {1, 0}, 1, {1, 8, 1}, block->shape, nullptr, 0};
  block->managed.manager_ctx = block;
  block->managed.deleter = release_pooled_block;
  // A capsule dropped before torch took it still owns the block.
  return py::capsule(&block->managed, "dltensor", [](PyObject* capsule) {
    if (PyCapsule_IsValid(capsule, "dltensor")) {
      auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
      managed->deleter(managed);
    }
  });
}

// A mixed-op call as the Python layer describes it: pointers as ints, host lists.
struct MixedOpCall {
  std::vector<const void*> inputs;
  std::vector<int64_t> slots;
  pynas::MixedOpArgs args;

  MixedOpCall(int dtype, const std::vector<uintptr_t>& input_addresses,
              std::vector<int64_t> input_slots, uintptr_t alpha, int64_t num_edges,
              int64_t num_ops, int64_t numel)
      : inputs(as_pointers<const void*>(input_addresses)), slots(std::move(input_slots)) {
    if (inputs.size() != slots.size())
      throw py::value_error("mixed_op: inputs and slots differ in length");
    args = {inputs.data(),
            slots.data(),
            static_cast<int64_t>(inputs.size()),
            reinterpret_cast<const void*>(alpha),
            num_edges,
            num_ops,
            numel,
            static_cast<pynas::DType>(dtype)};
  }
};

#ifdef PYNAS_WITH_CUDA
constexpr bool kWithCuda = true;
#else
constexpr bool kWithCuda = false;
#endif

void require_cuda() {
  if (!kWithCuda) throw std::runtime_error("pynas was built without CUDA kernels");
}

// Kernels that keep their own CUDA message: the sampling and rollout kernels
// (csrc/cuda/sampling.cu) and the partial-channel combine (csrc/cuda/partial_channel.cu).
// PYNAS_CUDA_MESSAGE(function) names the function that returns it (null without CUDA).
#ifdef PYNAS_WITH_CUDA
#define PYNAS_CUDA_MESSAGE(function) (&pynas::function)
#else
#define PYNAS_CUDA_MESSAGE(function) nullptr
#endif

void check_with_message(pynas::Status status, const char* what, bool cuda,
                        const char* (*cuda_message)()) {
  if (cuda && cuda_message != nullptr && status == pynas::Status::kCudaError)
    throw std::runtime_error(std::string(what) + ": CUDA error: " + cuda_message());
  check(status, what, false);
}

void check_sampling(pynas::Status status, const char* what, bool cuda) {
  check_with_message(status, what, cuda, PYNAS_CUDA_MESSAGE(sampling_last_cuda_error));
}

// A partial-channel call as the Python layer describes it: pointers as ints, host lists.
struct PartialChannelCall {
  std::vector<const void*> outputs;
  std::vector<int64_t> slots;
  std::vector<const void*> bypass;
  pynas::PartialChannelArgs args;

  PartialChannelCall(int dtype, const std::vector<uintptr_t>& output_addresses,
                     std::vector<int64_t> output_slots,
                     const std::vector<uintptr_t>& bypass_addresses,
                     int64_t bypass_batch_stride, uintptr_t alpha, uintptr_t edge_weights,
                     int64_t num_edges, int64_t num_ops, int64_t batch,
                     int64_t channels_per_group, int64_t groups, int64_t spatial)
      : outputs(as_pointers<const void*>(output_addresses)),
        slots(std::move(output_slots)),
        bypass(as_pointers<const void*>(bypass_addresses)) {
    if (outputs.size() != slots.size())
      throw py::value_error("partial_channel_combine: outputs and slots differ in length");
    if (groups > 1 && static_cast<int64_t>(bypass.size()) != num_edges)
      throw py::value_error("partial_channel_combine: bypass must hold one address per edge");
    args = {outputs.data(),
            slots.data(),
            static_cast<int64_t>(outputs.size()),
            bypass.data(),
            bypass_batch_stride,
            reinterpret_cast<const void*>(alpha),
            reinterpret_cast<const void*>(edge_weights),
            num_edges,
            num_ops,
            batch,
            channels_per_group,
            groups,
            spatial,
            static_cast<pynas::DType>(dtype)};
  }
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pynas compiled kernels (torch-free; called from pynas.ops)";
  m.attr("with_cuda") = kWithCuda;

  // inputs: M addresses of (numel,) arrays; slots: (M,) indices e*K + k into alpha (E, K).
  m.def(
      "mixed_op_forward",
      [](bool cuda, int dtype, const std::vector<uintptr_t>& inputs,
         std::vector<int64_t> slots, uintptr_t alpha, int64_t num_edges, int64_t num_ops,
         int64_t numel, uintptr_t out, int num_threads, uintptr_t workspace,
         uintptr_t stream) {
        MixedOpCall call(dtype, inputs, std::move(slots), alpha, num_edges, num_ops, numel);
        if (cuda) require_cuda();
        static_cast<void>(workspace), static_cast<void>(stream);  // unused without CUDA
        pynas::Status status = pynas::Status::kOk;
        {
          py::gil_scoped_release release;
          if (!cuda) {
            status = pynas::mixed_op_forward_cpu(call.args, reinterpret_cast<void*>(out),
                                                 num_threads);
          } else {
#ifdef PYNAS_WITH_CUDA
            status = pynas::mixed_op_forward_cuda(call.args, reinterpret_cast<void*>(out),
                                                  reinterpret_cast<void*>(workspace),
                                                  reinterpret_cast<void*>(stream));
#endif
          }
        }
        check(status, "mixed_op forward", cuda);
      },
      py::arg("cuda"), py::arg("dtype"), py::arg("inputs"), py::arg("slots"), py::arg("alpha"),
      py::arg("num_edges"), py::arg("num_ops"), py::arg("numel"), py::arg("out"),
      py::arg("num_threads"), py::arg("workspace"), py::arg("stream"));

  // grad_inputs: M addresses of (numel,) arrays written; grad_alpha: (E, K) written.
  m.def(
      "mixed_op_backward",
      [](bool cuda, int dtype, const std::vector<uintptr_t>& inputs,
         std::vector<int64_t> slots, uintptr_t alpha, int64_t num_edges, int64_t num_ops,
         int64_t numel, uintptr_t grad_out, const std::vector<uintptr_t>& grad_inputs,
         uintptr_t grad_alpha, int num_threads, uintptr_t workspace, uintptr_t stream) {
        MixedOpCall call(dtype, inputs, std::move(slots), alpha, num_edges, num_ops, numel);
        if (grad_inputs.size() != call.inputs.size())
          throw py::value_error("mixed_op backward: inputs and grad_inputs differ in length");
        std::vector<void*> grads = as_pointers<void*>(grad_inputs);
        if (cuda) require_cuda();
        static_cast<void>(workspace), static_cast<void>(stream);  // unused without CUDA
        pynas::Status status = pynas::Status::kOk;
        {
          py::gil_scoped_release release;
          if (!cuda) {
            status = pynas::mixed_op_backward_cpu(
                call.args, reinterpret_cast<const void*>(grad_out), grads.data(),
                reinterpret_cast<void*>(grad_alpha), num_threads);
          } else {
#ifdef PYNAS_WITH_CUDA
            status = pynas::mixed_op_backward_cuda(
                call.args, reinterpret_cast<const void*>(grad_out), grads.data(),
                reinterpret_cast<void*>(grad_alpha), reinterpret_cast<void*>(workspace),
                reinterpret_cast<void*>(stream));
#endif
          }
        }
        check(status, "mixed_op backward", cuda);
      },
      py::arg("cuda"), py::arg("dtype"), py::arg("inputs"), py::arg("slots"), py::arg("alpha"),
      py::arg("num_edges"), py::arg("num_ops"), py::arg("numel"), py::arg("grad_out"),
      py::arg("grad_inputs"), py::arg("grad_alpha"), py::arg("num_threads"),
      py::arg("workspace"), py::arg("stream"));

  m.def(
      "mixed_op_cuda_workspace_bytes",
      [](int64_t num_inputs, int64_t num_edges, int64_t num_ops, int64_t numel, int dtype) {
#ifdef PYNAS_WITH_CUDA
        pynas::MixedOpArgs args{nullptr, nullptr,  num_inputs, nullptr,
                                num_edges, num_ops, numel,     static_cast<pynas::DType>(dtype)};
        return pynas::mixed_op_cuda_workspace_bytes(args);
#else
        (void)num_inputs, (void)num_edges, (void)num_ops, (void)numel, (void)dtype;
        return int64_t{0};
#endif
      },
      py::arg("num_inputs"), py::arg("num_edges"), py::arg("num_ops"), py::arg("numel"),
      py::arg("dtype"));

  // outputs: M addresses of (N, C/g, S) arrays; slots: (M,) indices e*K + k into alpha
  // (E, K); bypass: E addresses of (N, C - C/g, S) arrays, samples bypass_batch_stride
  // elements apart (none when groups == 1); edge_weights: (E,) or 0 for all ones; out:
  // (N, C, S), written.
  m.def(
      "partial_channel_forward",
      [](bool cuda, int dtype, const std::vector<uintptr_t>& outputs, std::vector<int64_t> slots,
         const std::vector<uintptr_t>& bypass, int64_t bypass_batch_stride, uintptr_t alpha,
         uintptr_t edge_weights, int64_t num_edges, int64_t num_ops, int64_t batch,
         int64_t channels_per_group, int64_t groups, int64_t spatial, uintptr_t out,
         int num_threads, uintptr_t workspace, uintptr_t stream) {
        PartialChannelCall call(dtype, outputs, std::move(slots), bypass, bypass_batch_stride,
                                alpha, edge_weights, num_edges, num_ops, batch,
                                channels_per_group, groups, spatial);
        if (cuda) require_cuda();
        static_cast<void>(workspace), static_cast<void>(stream);  // unused without CUDA
        pynas::Status status = pynas::Status::kOk;
        {
          py::gil_scoped_release release;
          if (!cuda) {
            status = pynas::partial_channel_forward_cpu(call.args, reinterpret_cast<void*>(out),
                                                        num_threads);
          } else {
#ifdef PYNAS_WITH_CUDA
            status = pynas::partial_channel_forward_cuda(
                call.args, reinterpret_cast<void*>(out), reinterpret_cast<void*>(workspace),
                reinterpret_cast<void*>(stream));
#endif
          }
        }
        check_with_message(status, "partial_channel_combine forward", cuda,
                           PYNAS_CUDA_MESSAGE(partial_channel_last_cuda_error));
      },
      py::arg("cuda"), py::arg("dtype"), py::arg("outputs"), py::arg("slots"), py::arg("bypass"),
      py::arg("bypass_batch_stride"), py::arg("alpha"), py::arg("edge_weights"),
      py::arg("num_edges"), py::arg("num_ops"), py::arg("batch"), py::arg("channels_per_group"),
      py::arg("groups"), py::arg("spatial"),
      py::arg("out"), py::arg("num_threads"), py::arg("workspace"), py::arg("stream"));

  // grad_outputs: M addresses, grad_bypass: E addresses (none when groups == 1), grad_alpha
  // (E, K), grad_edge_weights (E,) or 0 when that gradient is not wanted; all written.
  m.def(
      "partial_channel_backward",
      [](bool cuda, int dtype, const std::vector<uintptr_t>& outputs, std::vector<int64_t> slots,
         const std::vector<uintptr_t>& bypass, int64_t bypass_batch_stride, uintptr_t alpha,
         uintptr_t edge_weights, int64_t num_edges, int64_t num_ops, int64_t batch,
         int64_t channels_per_group, int64_t groups, int64_t spatial, uintptr_t grad_out,
         const std::vector<uintptr_t>& grad_outputs, const std::vector<uintptr_t>& grad_bypass,
         uintptr_t grad_alpha, uintptr_t grad_edge_weights, int num_threads,
         uintptr_t workspace, uintptr_t stream) {
        PartialChannelCall call(dtype, outputs, std::move(slots), bypass, bypass_batch_stride,
                                alpha, edge_weights, num_edges, num_ops, batch,
                                channels_per_group, groups, spatial);
        if (grad_outputs.size() != call.outputs.size() ||
            grad_bypass.size() != call.bypass.size())
          throw py::value_error(
              "partial_channel_combine backward: gradients and inputs differ in number");
        std::vector<void*> output_grads = as_pointers<void*>(grad_outputs);
        std::vector<void*> bypass_grads = as_pointers<void*>(grad_bypass);
        if (cuda) require_cuda();
        static_cast<void>(workspace), static_cast<void>(stream);  // unused without CUDA
        pynas::Status status = pynas::Status::kOk;
        {
          py::gil_scoped_release release;
          if (!cuda) {
            status = pynas::partial_channel_backward_cpu(
                call.args, reinterpret_cast<const void*>(grad_out), output_grads.data(),
                bypass_grads.data(), reinterpret_cast<void*>(grad_alpha),
                reinterpret_cast<void*>(grad_edge_weights), num_threads);
          } else {
#ifdef PYNAS_WITH_CUDA
            status = pynas::partial_channel_backward_cuda(
                call.args, reinterpret_cast<const void*>(grad_out), output_grads.data(),
                bypass_grads.data(), reinterpret_cast<void*>(grad_alpha),
                reinterpret_cast<void*>(grad_edge_weights), reinterpret_cast<void*>(workspace),
                reinterpret_cast<void*>(stream));
#endif
          }
        }
        check_with_message(status, "partial_channel_combine backward", cuda,
                           PYNAS_CUDA_MESSAGE(partial_channel_last_cuda_error));
      },
      py::arg("cuda"), py::arg("dtype"), py::arg("outputs"), py::arg("slots"), py::arg("bypass"),
      py::arg("bypass_batch_stride"), py::arg("alpha"), py::arg("edge_weights"),
      py::arg("num_edges"), py::arg("num_ops"), py::arg("batch"), py::arg("channels_per_group"),
      py::arg("groups"), py::arg("spatial"),
      py::arg("grad_out"), py::arg("grad_outputs"), py::arg("grad_bypass"),
      py::arg("grad_alpha"), py::arg("grad_edge_weights"), py::arg("num_threads"),
      py::arg("workspace"), py::arg("stream"));

  m.def(
      "partial_channel_cuda_workspace_bytes",
      [](int64_t num_edges, int64_t num_ops) {
#ifdef PYNAS_WITH_CUDA
        return pynas::partial_channel_cuda_workspace_bytes(num_edges, num_ops);
#else
        (void)num_edges, (void)num_ops;
        return int64_t{0};
#endif
      },
      py::arg("num_edges"), py::arg("num_ops"));

  // logits: (rows, classes) at `logits`, rows `row_stride` elements apart; actions: (rows,)
  // int64, log_prob and entropy: (rows,) of dtype, written.
  m.def(
      "sample_categorical",
      [](bool cuda, int dtype, uintptr_t logits, int64_t rows, int64_t classes,
         int64_t row_stride, uint64_t seed, uint64_t offset, uintptr_t actions,
         uintptr_t log_prob, uintptr_t entropy, int num_threads, uintptr_t stream) {
        if (cuda) require_cuda();
        const pynas::CategoricalArgs args{reinterpret_cast<const void*>(logits),
                                          rows,
                                          classes,
                                          row_stride,
                                          static_cast<pynas::DType>(dtype),
                                          seed,
                                          offset};
        static_cast<void>(stream);  // unused without CUDA
        pynas::Status status = pynas::Status::kOk;
        {
          py::gil_scoped_release release;
          if (!cuda) {
            status = pynas::sample_categorical_cpu(args, reinterpret_cast<int64_t*>(actions),
                                                   reinterpret_cast<void*>(log_prob),
                                                   reinterpret_cast<void*>(entropy), num_threads);
          } else {
#ifdef PYNAS_WITH_CUDA
            status = pynas::sample_categorical_cuda(args, reinterpret_cast<int64_t*>(actions),
                                                    reinterpret_cast<void*>(log_prob),
                                                    reinterpret_cast<void*>(entropy),
                                                    reinterpret_cast<void*>(stream));
#endif
          }
        }
        check_sampling(status, "sample_categorical", cuda);
      },
      py::arg("cuda"), py::arg("dtype"), py::arg("logits"), py::arg("rows"), py::arg("classes"),
      py::arg("row_stride"), py::arg("seed"), py::arg("offset"), py::arg("actions"),
      py::arg("log_prob"), py::arg("entropy"), py::arg("num_threads"), py::arg("stream"));

  // program: seven (S,) int lists (kinds, options, records_anchor, head_offsets,
  // embedding_offsets, decision_offsets, anchor_offsets); weights: addresses of the nine float32 arrays of
  // RolloutWeights in its order; actions (count, D) int64, log_prob and entropy (count, D)
  // float32, written.
  m.def(
      "controller_rollout",
      [](bool cuda, const std::vector<std::vector<int32_t>>& program, int64_t num_decisions,
         int64_t num_anchors, const std::vector<uintptr_t>& weights, int64_t hidden,
         int64_t table_rows, int64_t head_rows, float tanh_constant, int64_t count,
         uint64_t seed, uint64_t offset, uintptr_t actions, uintptr_t log_prob,
         uintptr_t entropy, int num_threads, uintptr_t workspace, uintptr_t stream) {
        if (cuda) require_cuda();
        if (program.size() != 7 || weights.size() != 9)
          throw py::value_error("controller_rollout: expected 7 program lists and 9 weights");
        for (const auto& list : program)
          if (list.size() != program[0].size())
            throw py::value_error("controller_rollout: program lists differ in length");
        const std::vector<const float*> w = as_pointers<const float*>(weights);
        const pynas::RolloutProgram rollout_program{
            program[0].data(), program[1].data(), program[2].data(),
            program[3].data(), program[4].data(), program[5].data(), program[6].data(),
            static_cast<int64_t>(program[0].size()), num_decisions, num_anchors};
        const pynas::RolloutWeights rollout_weights{w[0], w[1], w[2], w[3], w[4], w[5],
                                                    head_rows, w[6], w[7], w[8], hidden,
                                                    table_rows, tanh_constant};
        const pynas::RolloutOutputs outputs{reinterpret_cast<int64_t*>(actions),
                                            reinterpret_cast<float*>(log_prob),
                                            reinterpret_cast<float*>(entropy)};
        static_cast<void>(workspace), static_cast<void>(stream);  // unused without CUDA
        pynas::Status status = pynas::Status::kOk;
        {
          py::gil_scoped_release release;
          if (!cuda) {
            status = pynas::controller_rollout_cpu(rollout_program, rollout_weights, count, seed,
                                                   offset, outputs, num_threads);
          } else {
#ifdef PYNAS_WITH_CUDA
            status = pynas::controller_rollout_cuda(
                rollout_program, rollout_weights, count, seed, offset, outputs,
                reinterpret_cast<void*>(workspace), reinterpret_cast<void*>(stream));
#endif
          }
        }
        check_sampling(status, "controller_rollout", cuda);
      },
      py::arg("cuda"), py::arg("program"), py::arg("num_decisions"), py::arg("num_anchors"),
      py::arg("weights"), py::arg("hidden"), py::arg("table_rows"), py::arg("head_rows"),
      py::arg("tanh_constant"), py::arg("count"), py::arg("seed"), py::arg("offset"),
      py::arg("actions"), py::arg("log_prob"), py::arg("entropy"), py::arg("num_threads"),
      py::arg("workspace"), py::arg("stream"));

  m.def(
      "controller_rollout_cuda_workspace_bytes",
      [](int64_t count, int64_t num_anchors, int64_t hidden) {
#ifdef PYNAS_WITH_CUDA
        return pynas::controller_rollout_cuda_workspace_bytes(count, num_anchors, hidden);
#else
        (void)count, (void)num_anchors, (void)hidden;
        return int64_t{0};
#endif
      },
      py::arg("count"), py::arg("num_anchors"), py::arg("hidden"));

  // Host blocks for large CPU gradients (csrc/host_pool.h), as DLPack capsules.
  m.def("pooled_host_block", &pooled_host_block, py::arg("bytes"));
  m.def("host_pool_cached_bytes", []() { return pynas::host_pool_cached_bytes(); });
  m.def("host_pool_limit", []() { return pynas::host_pool_limit(); });
  m.def("host_pool_set_limit", [](size_t bytes) { pynas::host_pool_set_limit(bytes); },
        py::arg("bytes"));
  m.def("host_pool_empty", []() { pynas::host_pool_empty(); });

  m.def("cuda_archs", []() {
    std::vector<int> archs;
#ifdef PYNAS_WITH_CUDA
    archs.resize(32);
    archs.resize(pynas::cuda_compiled_archs(archs.data(), static_cast<int>(archs.size())));
#endif
    return archs;
  });

  m.def("cuda_device_count", []() {
#ifdef PYNAS_WITH_CUDA
    return pynas::cuda_device_count();
#else
    return 0;
#endif
  });
}
