// The only C++ file that knows Python: binds the torch-free kernels as `pynas._C`.
// Tensors arrive as raw addresses (ints) from pynas/ops; every status becomes an
// exception here, in one place.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mixed_op.h"

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
