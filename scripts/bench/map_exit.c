/* What unmapping a dump's pages costs at exit, without `divergence` (docs/performance.md,
 * "Decode steps", session 14): maps each file given, reads one byte of every 4 KiB page,
 * prints the wall clock (ms since the epoch) and exits; the shell's clock after the process
 * ends, minus that, is the exit. Build and run:
 *
 *   cc -O2 scripts/bench/map_exit.c -o /tmp/map_exit
 *   t=$(/tmp/map_exit ref.npz); e=$(date +%s%N); python3 -c "print($e / 1e6 - $t)"
 *
 * The same bytes cost more or less to unmap depending on how their pages came into the page
 * cache (which program wrote the file, what was evicted and read back since): compare files
 * with one history (e.g. fresh `cp` copies of each). */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

int main(int argc, char **argv) {
  volatile long sum = 0;
  for (int k = 1; k < argc; k++) {
    int fd = open(argv[k], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      perror(argv[k]);
      return 2;
    }
    const char *p = mmap(0, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      perror(argv[k]);
      return 2;
    }
    for (off_t i = 0; i < st.st_size; i += 4096) sum += p[i];
  }
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  printf("%.3f\n", t.tv_sec * 1e3 + t.tv_nsec / 1e6);
  return 0;
}
