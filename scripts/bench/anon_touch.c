/* What a process pays to touch fresh anonymous memory for the first time, without `divergence`
 * (docs/performance.md, "Decode steps", session 19): maps MB megabytes of anonymous memory,
 * asks for huge pages (HUGE=1, `MADV_HUGEPAGE`) or 4 KiB pages (HUGE=0, `MADV_NOHUGEPAGE`),
 * writes one byte of every 4 KiB page and prints the wall time of the map and the writes (the
 * kernel's page faults and zeroing). A decode report's rows and a decode dump's per-step
 * entries are such memory (~110 MB for the 256-step pair of the 0.6B-shaped model). Build and
 * run:
 *
 *   cc -O2 scripts/bench/anon_touch.c -o /tmp/anon_touch
 *   for i in 1 2 3; do /tmp/anon_touch 100 1; /tmp/anon_touch 100 0; done */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MB HUGE(0|1)\n", argv[0]);
    return 2;
  }
  size_t n = (size_t)atol(argv[1]) << 20;
  int huge = atoi(argv[2]);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  madvise(p, n, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%zu MB, huge pages %s: %.1f ms\n", n >> 20, huge ? "asked" : "refused",
         (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6);
  return 0;
}
