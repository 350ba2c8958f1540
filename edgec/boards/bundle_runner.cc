// edgec's C++ runner: runs an edgec library with the TVM runtime alone (libtvm_runtime.so and
// libtvm_ffi.so, no Python), on inputs read from .npy files, writes the outputs as .npy and
// prints latency percentiles. `edgec bundle --cpp` cross-compiles it for the library's target.
//
//   run_model MODEL.so --input NAME=FILE.npy [...] [--output-dir DIR] [--runs N] [--warmup N]
//
// The VM calls are the ones the tvm package's VirtualMachine wraps (vm_load_executable,
// vm_initialization, set_input, invoke_stateful, get_output, get_output_arity,
// get_function_arity, get_function_param_name), as of TVM 0.27.
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using tvm::ffi::Any;
using tvm::ffi::AnyView;
using tvm::ffi::Function;
using tvm::ffi::Module;

constexpr int kCpu = 1;              // DLPack's kDLCPU
constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR

// Input tensors on the CPU, 64-byte aligned as TVM's own allocator aligns them (compiled
// kernels may assume it).
struct AlignedCpuAlloc {
  void AllocData(DLTensor* tensor) {
    const size_t size = (tvm::ffi::GetDataSize(*tensor) + 63) / 64 * 64;
    tensor->data = std::aligned_alloc(64, size ? size : 64);
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

struct Npy {
  DLDataType dtype;
  std::vector<int64_t> shape;
  std::string data;
};

DLDataType DtypeOf(const std::string& descr) {
  static const std::map<std::string, DLDataType> known = {
      {"f4", {kDLFloat, 32, 1}}, {"f2", {kDLFloat, 16, 1}}, {"f8", {kDLFloat, 64, 1}},
      {"i1", {kDLInt, 8, 1}},    {"u1", {kDLUInt, 8, 1}},   {"i4", {kDLInt, 32, 1}},
      {"i8", {kDLInt, 64, 1}},   {"b1", {kDLBool, 8, 1}}};
  auto found = known.find(descr.substr(1));
  if (descr.empty() || descr[0] == '>' || found == known.end()) {
    throw std::runtime_error("unsupported .npy dtype " + descr);
  }
  return found->second;
}

std::string DescrOf(DLDataType dtype) {
  if (dtype.code == kDLFloat) return "<f" + std::to_string(dtype.bits / 8);
  if (dtype.code == kDLInt) return dtype.bits == 8 ? "|i1" : "<i" + std::to_string(dtype.bits / 8);
  if (dtype.code == kDLUInt) return dtype.bits == 8 ? "|u1" : "<u" + std::to_string(dtype.bits / 8);
  if (dtype.code == kDLBool) return "|b1";
  throw std::runtime_error("output dtype code " + std::to_string(dtype.code) + " has no .npy");
}

// Reads a C-order .npy file (format 1.x or 2.x).
Npy ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    throw std::runtime_error(path + " is not a .npy file");
  }
  size_t header_len, offset;
  if (bytes[6] == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | static_cast<uint8_t>(bytes[9]) << 8;
    offset = 10;
  } else {
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= size_t(static_cast<uint8_t>(bytes[8 + i])) << 8 * i;
    offset = 12;
  }
  std::string header = bytes.substr(offset, header_len);
  auto field = [&](const std::string& key) {
    size_t at = header.find("'" + key + "'");
    if (at == std::string::npos) throw std::runtime_error(path + ": no " + key + " in header");
    return header.substr(header.find(':', at) + 1);
  };
  std::string descr = field("descr");
  descr = descr.substr(descr.find('\'') + 1);
  descr = descr.substr(0, descr.find('\''));
  if (field("fortran_order").find("True") < field("fortran_order").find(',')) {
    throw std::runtime_error(path + " is in Fortran order; save a C-order array");
  }
  std::string dims = field("shape");
  dims = dims.substr(dims.find('(') + 1, dims.find(')') - dims.find('(') - 1);
  Npy npy{DtypeOf(descr), {}, {}};
  std::stringstream cells(dims);
  for (std::string cell; std::getline(cells, cell, ',');) {
    if (cell.find_first_not_of(' ') != std::string::npos) npy.shape.push_back(std::stoll(cell));
  }
  npy.data = bytes.substr(offset + header_len);
  return npy;
}

void WriteNpy(const std::string& path, const tvm::ffi::Tensor& tensor) {
  if (!tensor.IsContiguous()) throw std::runtime_error("output for " + path + " is strided");
  std::string shape;
  for (int i = 0; i < tensor.ndim(); ++i) {
    shape += std::to_string(tensor.size(i)) + (tensor.ndim() == 1 || i + 1 < tensor.ndim() ? "," : "");
  }
  std::string header = "{'descr': '" + DescrOf(tensor.dtype()) +
                       "', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ').push_back('\n');  // 64-byte aligned data
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.put(static_cast<char>(len & 0xff)).put(static_cast<char>(len >> 8));
  out << header;
  out.write(static_cast<const char*>(tensor.data_ptr()) + tensor.byte_offset(),
            static_cast<std::streamsize>(tvm::ffi::GetDataSize(*tensor.GetDLTensorPtr())));
  if (!out) throw std::runtime_error("cannot write " + path);
}

Function Get(const Module& module, const std::string& name) {
  auto function = module->GetFunction(name);
  if (!function.has_value()) throw std::runtime_error("the VM has no function " + name);
  return function.value();
}

void CollectOutputs(const Function& arity, const Function& get, std::vector<int64_t> index,
                    std::vector<tvm::ffi::Tensor>* outputs) {
  std::vector<AnyView> args{AnyView(std::string("main"))};
  std::string main = "main";
  args[0] = AnyView(main);
  for (int64_t& i : index) args.emplace_back(i);
  Any count;
  arity.CallPacked(args.data(), static_cast<int32_t>(args.size()), &count);
  if (count.cast<int64_t>() == -1) {
    Any value;
    get.CallPacked(args.data(), static_cast<int32_t>(args.size()), &value);
    outputs->push_back(value.cast<tvm::ffi::Tensor>());
    return;
  }
  for (int64_t i = 0; i < count.cast<int64_t>(); ++i) {
    std::vector<int64_t> deeper = index;
    deeper.push_back(i);
    CollectOutputs(arity, get, deeper, outputs);
  }
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const double at = p / 100.0 * (values.size() - 1);
  const size_t low = static_cast<size_t>(at);
  const size_t high = std::min(low + 1, values.size() - 1);
  return values[low] + (values[high] - values[low]) * (at - low);
}

int Run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s MODEL.so --input NAME=FILE.npy [...] [--output-dir DIR] "
                 "[--runs N] [--warmup N]\n", argv[0]);
    return 2;
  }
  std::string library = argv[1], output_dir = ".";
  std::map<std::string, std::string> input_files;
  int runs = 10, warmup = 2;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
    std::string value = argv[++i];
    if (arg == "--input" && value.find('=') != std::string::npos) {
      input_files[value.substr(0, value.find('='))] = value.substr(value.find('=') + 1);
    } else if (arg == "--output-dir") {
      output_dir = value;
    } else if (arg == "--runs") {
      runs = std::max(1, std::stoi(value));
    } else if (arg == "--warmup") {
      warmup = std::max(0, std::stoi(value));
    } else {
      throw std::runtime_error("unknown argument " + arg + " " + value);
    }
  }
  Module module = Module::LoadFromFile(library);
  Module vm = Get(module, "vm_load_executable")().cast<Module>();
  Get(vm, "vm_initialization")(kCpu, 0, kPooledAllocator);

  const int64_t arity = Get(vm, "get_function_arity")("main").cast<int64_t>();
  Function param_name = Get(vm, "get_function_param_name");
  std::vector<tvm::ffi::Tensor> inputs;
  std::vector<AnyView> args;
  std::string main = "main";
  args.emplace_back(main);
  for (int64_t i = 0; i < arity; ++i) {
    std::string name = param_name("main", i).cast<std::string>();
    auto file = input_files.find(name);
    if (file == input_files.end()) throw std::runtime_error("missing --input " + name + "=FILE.npy");
    Npy npy = ReadNpy(file->second);
    auto tensor = tvm::ffi::Tensor::FromNDAlloc(AlignedCpuAlloc(), tvm::ffi::Shape(npy.shape),
                                                npy.dtype, DLDevice{kDLCPU, 0});
    if (tvm::ffi::GetDataSize(*tensor.GetDLTensorPtr()) != npy.data.size()) {
      throw std::runtime_error(file->second + ": the data does not fill its shape");
    }
    std::memcpy(tensor.data_ptr(), npy.data.data(), npy.data.size());
    inputs.push_back(tensor);
  }
  for (const auto& tensor : inputs) args.emplace_back(tensor);
  Any ignored;
  Get(vm, "set_input").CallPacked(args.data(), static_cast<int32_t>(args.size()), &ignored);

  Function invoke = Get(vm, "invoke_stateful");
  for (int i = 0; i < warmup; ++i) invoke("main");
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto start = std::chrono::steady_clock::now();
    invoke("main");
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start).count());
  }
  std::vector<tvm::ffi::Tensor> outputs;
  CollectOutputs(Get(vm, "get_output_arity"), Get(vm, "get_output"), {}, &outputs);
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string path = output_dir + "/output" + std::to_string(i) + ".npy";
    WriteNpy(path, outputs[i]);
    std::printf("wrote %s\n", path.c_str());
  }
  std::printf("%d runs after %d warm-up: median %.3f ms, p90 %.3f ms, p99 %.3f ms, min %.3f ms\n",
              runs, warmup, Percentile(ms, 50), Percentile(ms, 90), Percentile(ms, 99),
              *std::min_element(ms.begin(), ms.end()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
    return 1;
  }
}
