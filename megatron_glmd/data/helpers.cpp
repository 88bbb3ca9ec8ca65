// Sample index over an indexed dataset, the C++ twin of sample_index.py's NumPy reference.
//
// The algorithm (documented in sample_index.py) is sequential by nature: Fisher-Yates shuffles
// driven by a counter-based splitmix64 generator, and a walk that cuts the concatenated,
// per-epoch-shuffled document stream into windows of seq_length tokens. Both implementations
// must give bit-identical arrays; the tests hold them to that.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace py = pybind11;

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr int64_t kMaxShuffle = int64_t(1) << 32;  // the bounded draw needs i + 1 <= 2^32

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline uint64_t derive_key(uint64_t seed, uint64_t stream, uint64_t epoch) {
  return mix64(mix64(mix64(seed) + stream) + epoch);
}

// In-place Fisher-Yates: for i = n-1 .. 1, j = floor(mix64(key + i*golden) * (i+1) / 2^64), swap a[i], a[j].
template <typename T>
void shuffle(T* a, int64_t n, uint64_t key) {
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t r = mix64(key + static_cast<uint64_t>(i) * kGolden);
    // Multiply-shift bounded draw: floor(r * (i+1) / 2^64), no slow 64-bit division.
    const int64_t j = static_cast<int64_t>((static_cast<unsigned __int128>(r) * static_cast<uint64_t>(i + 1)) >> 64);
    const T tmp = a[i];
    a[i] = a[j];
    a[j] = tmp;
  }
}

py::array_t<int64_t> permutation(int64_t n, uint64_t key) {
  if (n < 0 || n > kMaxShuffle) throw std::invalid_argument("permutation size must be in [0, 2^32], got " + std::to_string(n));
  py::array_t<int64_t> out(n);
  int64_t* p = out.mutable_data();
  {
    py::gil_scoped_release release;
    for (int64_t i = 0; i < n; ++i) p[i] = i;
    shuffle(p, n, key);
  }
  return out;
}

py::tuple build_sample_index(py::array_t<int64_t, py::array::c_style | py::array::forcecast> doc_lengths,
                             int64_t seq_length, int64_t num_epochs, uint64_t seed) {
  if (doc_lengths.ndim() != 1) throw std::invalid_argument("doc_lengths must be one-dimensional");
  if (seq_length < 1) throw std::invalid_argument("seq_length must be >= 1, got " + std::to_string(seq_length));
  if (num_epochs < 1) throw std::invalid_argument("num_epochs must be >= 1, got " + std::to_string(num_epochs));
  const int64_t num_docs = doc_lengths.shape(0);
  if (num_docs < 1) throw std::invalid_argument("the dataset has no documents");
  if (num_docs > INT32_MAX) throw std::invalid_argument("more than 2^31-1 documents");
  const int64_t* lengths = doc_lengths.data();
  int64_t tokens_per_epoch = 0;
  for (int64_t d = 0; d < num_docs; ++d) {
    if (lengths[d] < 1)
      throw std::invalid_argument("document " + std::to_string(d) + " has length " + std::to_string(lengths[d]) +
                                  " (every document needs at least one token)");
    tokens_per_epoch += lengths[d];
  }
  const int64_t total_docs = num_docs * num_epochs;
  const int64_t num_samples = tokens_per_epoch * num_epochs / seq_length;
  if (num_samples > kMaxShuffle) throw std::invalid_argument("more than 2^32 samples; use a longer seq_length");

  py::array_t<int32_t> doc_idx(total_docs);
  py::array_t<int64_t> sample_idx(std::vector<py::ssize_t>{num_samples + 1, 2});
  py::array_t<int64_t> shuffle_idx(num_samples);
  int32_t* docs = doc_idx.mutable_data();
  int64_t* samples = sample_idx.mutable_data();
  int64_t* order = shuffle_idx.mutable_data();
  {
    py::gil_scoped_release release;
    // 1. One independent document permutation per epoch.
    for (int64_t e = 0; e < num_epochs; ++e) {
      int32_t* block = docs + e * num_docs;
      for (int64_t d = 0; d < num_docs; ++d) block[d] = static_cast<int32_t>(d);
      shuffle(block, num_docs, derive_key(seed, 1, static_cast<uint64_t>(e)));
    }
    // 2. Cut the stream into windows; a boundary that falls between documents is (next doc, 0).
    int64_t i = 0, offset = 0;
    for (int64_t k = 0; k <= num_samples; ++k) {
      samples[2 * k] = i;
      samples[2 * k + 1] = offset;
      if (k == num_samples) break;
      int64_t remaining = seq_length;
      while (remaining > 0) {
        const int64_t available = lengths[docs[i]] - offset;
        if (available > remaining) {
          offset += remaining;
          remaining = 0;
        } else {
          remaining -= available;
          ++i;
          offset = 0;
        }
      }
    }
    // 3. One permutation of all samples of all epochs.
    for (int64_t k = 0; k < num_samples; ++k) order[k] = k;
    shuffle(order, num_samples, derive_key(seed, 2, 0));
  }
  return py::make_tuple(doc_idx, sample_idx, shuffle_idx);
}

}  // namespace

PYBIND11_MODULE(_helpers, m) {
  m.doc() = "C++ sample index for megatron_glmd.data (see sample_index.py for the algorithm)";
  m.def("build_sample_index", &build_sample_index, py::arg("doc_lengths"), py::arg("seq_length"),
        py::arg("num_epochs"), py::arg("seed"),
        "(doc_idx int32[E*D], sample_idx int64[S+1, 2], shuffle_idx int64[S]) for windows of seq_length tokens");
  m.def("permutation", &permutation, py::arg("n"), py::arg("key"), "Fisher-Yates permutation of range(n)");
  m.def("derive_key", &derive_key, py::arg("seed"), py::arg("stream"), py::arg("epoch"));
}
