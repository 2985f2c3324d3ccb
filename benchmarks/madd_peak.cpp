// The CPU's integer multiply-add rate on one core: vpmaddwd (16 int16 products a 256-bit
// instruction) and vpmaddubsw (32 u8 x s8 ones), eight independent chains each, so that the
// instruction's throughput, not its latency, bounds the loop. The ceiling the group kernels'
// rates (benchmarks/layer_rates.py) are held against.
//
//   g++ -O2 -mavx2 -o /tmp/madd_peak benchmarks/madd_peak.cpp && /tmp/madd_peak
#include <immintrin.h>

#include <chrono>
#include <cstdio>

template <typename Op>
double instructions_per_second(Op op) {
  __m256i acc[8], x = _mm256_set1_epi16(5);
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_set1_epi32(i);
  const long steps = 200000000;
  const auto start = std::chrono::steady_clock::now();
  for (long n = 0; n < steps; ++n) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = op(acc[i], x);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  __m256i sum = acc[0];
  for (int i = 1; i < 8; ++i) sum = _mm256_add_epi32(sum, acc[i]);
  std::printf("(checksum %d) ", _mm256_extract_epi32(sum, 0));  // keeps the loop
  return steps * 8 / seconds;
}

int main() {
  const double madd = instructions_per_second([](__m256i a, __m256i x) { return _mm256_madd_epi16(a, x); });
  std::printf("vpmaddwd: %.2f G/s = %.0f G int16 multiply-adds/s\n", madd / 1e9, 16 * madd / 1e9);
  const double maddubs = instructions_per_second([](__m256i a, __m256i x) { return _mm256_maddubs_epi16(a, x); });
  std::printf("vpmaddubsw: %.2f G/s = %.0f G int8 multiply-adds/s\n", maddubs / 1e9, 32 * maddubs / 1e9);
}
