// Raw parallel read of a list of files: the floor that benches/hash.js compares hashFiles against.
//
// Reads every file of the list whole (open, read into a reused per-thread buffer until read()
// returns 0, close) on N threads taking files from a shared counter, and hashes nothing. The
// list is read and the threads started before the clock starts, so the figure is the reads alone.
//
// Usage: rawread <root> <list> [threads=2] [buffer bytes=131072]
//   <list>: NUL-separated paths relative to <root> (the tool chdirs there and opens them as
//   given, so each open walks the same path components as hashFiles' open under <root>).
// Prints one JSON line: {"ns":..., "cpu_us":..., "files":..., "bytes":..., "threads":..., "buffer":...}
// (ns: wall time of the reads; cpu_us: user + system CPU time of the process).
//
// Built by benches/hash.js with `cc -O2 -pthread` into .bench/ (not part of the npm package).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char **paths;
static size_t count;
static size_t buffer_size;
static atomic_size_t next_index;
static atomic_ullong total_bytes;
static atomic_int failed;
static pthread_barrier_t start;

static void *worker(void *arg) {
  (void)arg;
  // Page-aligned: the kernel's copy into a destination that is not 64-byte aligned costs up to
  // twice as much CPU on this machine (malloc's large blocks start 16 bytes into a page).
  char *buf = NULL;
  if (posix_memalign((void **)&buf, 4096, buffer_size) != 0) {
    buf = NULL;
    atomic_store(&failed, 1);
  }
  // Touch the buffer once so that its first use is not a page fault in the timed part.
  if (buf) memset(buf, 0, buffer_size);
  pthread_barrier_wait(&start);
  unsigned long long bytes = 0;
  for (;;) {
    size_t i = atomic_fetch_add(&next_index, 1);
    if (i >= count || !buf) break;
    int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      fprintf(stderr, "rawread: cannot open %s: %s\n", paths[i], strerror(errno));
      atomic_store(&failed, 1);
      continue;
    }
    for (;;) {
      ssize_t n = read(fd, buf, buffer_size);
      if (n > 0) {
        bytes += (unsigned long long)n;
      } else if (n == 0) {
        break;
      } else if (errno != EINTR) {
        fprintf(stderr, "rawread: cannot read %s: %s\n", paths[i], strerror(errno));
        atomic_store(&failed, 1);
        break;
      }
    }
    close(fd);
  }
  atomic_fetch_add(&total_bytes, bytes);
  free(buf);
  return NULL;
}

static char *read_list(const char *file, size_t *len) {
  FILE *f = fopen(file, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 20, n = 0;
  char *data = malloc(cap + 1);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      char *grown = realloc(data, cap + 1);
      if (!grown) {
        free(data);
        fclose(f);
        return NULL;
      }
      data = grown;
    }
    size_t got = fread(data + n, 1, cap - n, f);
    if (got == 0) break;
    n += got;
  }
  fclose(f);
  data[n] = '\0';
  *len = n;
  return data;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: rawread <root> <list> [threads] [buffer bytes]\n");
    return 2;
  }
  long threads = argc > 3 ? strtol(argv[3], NULL, 10) : 2;
  long buffer = argc > 4 ? strtol(argv[4], NULL, 10) : 131072;
  if (threads < 1 || threads > 256 || buffer < 4096) {
    fprintf(stderr, "rawread: threads must be 1-256 and the buffer at least 4096 bytes\n");
    return 2;
  }
  buffer_size = (size_t)buffer;
  size_t len = 0;
  char *list = read_list(argv[2], &len);
  if (!list) {
    fprintf(stderr, "rawread: cannot read the list %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  for (size_t i = 0; i < len; i++) count += list[i] == '\0';
  if (len > 0 && list[len - 1] != '\0') count++;
  paths = malloc(sizeof(char *) * (count ? count : 1));
  size_t k = 0;
  for (size_t i = 0; i < len && k < count; k++) {
    paths[k] = list + i;
    i += strlen(list + i) + 1;
  }
  if (chdir(argv[1]) != 0) {
    fprintf(stderr, "rawread: cannot enter %s: %s\n", argv[1], strerror(errno));
    return 1;
  }

  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_t *ids = malloc(sizeof(pthread_t) * (size_t)threads);
  for (long t = 0; t < threads; t++) {
    int err = pthread_create(&ids[t], NULL, worker, NULL);
    if (err != 0) {
      fprintf(stderr, "rawread: cannot start thread %ld: %s\n", t, strerror(err));
      return 1;
    }
  }
  struct timespec t0, t1;
  pthread_barrier_wait(&start);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long t = 0; t < threads; t++) pthread_join(ids[t], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (atomic_load(&failed)) return 1;
  long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
  // CPU time of the whole process (user + system, all threads): the list loading before the
  // clock is a few milliseconds of it.
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  long long cpu_us = (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000LL +
                     ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
  printf("{\"ns\":%lld,\"cpu_us\":%lld,\"files\":%zu,\"bytes\":%llu,\"threads\":%ld,\"buffer\":%ld}\n",
         ns, cpu_us, count, (unsigned long long)atomic_load(&total_bytes), threads, buffer);
  return 0;
}
