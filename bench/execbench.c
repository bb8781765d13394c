/* execbench: time posix_spawn + waitpid of one program, the way a shell runs it.
 *
 *   execbench [-w WARMUP] [-s SLEEP_MS] N PATH [ARG...]   prints N samples (microseconds), one a line
 *   execbench -p WORKERS N PATH [ARG...]                  prints total execs per second
 *
 * The child's stdout goes to /dev/null. Samples are printed only at the end, so printing never
 * lands inside a measurement.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void run_once(posix_spawn_file_actions_t *actions, char **argv) {
    pid_t pid;
    int status;
    if (posix_spawn(&pid, argv[0], actions, NULL, argv, environ) != 0) {
        perror("posix_spawn");
        exit(2);
    }
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "execbench: %s failed (status %d)\n", argv[0], status);
        exit(3);
    }
}

int main(int argc, char **argv) {
    int warmup = -1, workers = 0, sleep_ms = 0, opt;
    while ((opt = getopt(argc, argv, "+w:p:s:")) != -1) {
        if (opt == 'w') warmup = atoi(optarg);
        else if (opt == 'p') workers = atoi(optarg);
        else if (opt == 's') sleep_ms = atoi(optarg);
        else return 1;
    }
    if (argc - optind < 2) {
        fprintf(stderr, "usage: execbench [-w WARMUP] [-s MS] [-p WORKERS] N PATH [ARG...]\n");
        return 1;
    }
    int n = atoi(argv[optind]);
    char **child = &argv[optind + 1];
    if (warmup < 0) warmup = n / 10 > 20 ? n / 10 : 20;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);

    for (int i = 0; i < warmup; i++) run_once(&actions, child);

    if (workers > 0) {
        double start = now_us();
        for (int w = 0; w < workers; w++) {
            if (fork() == 0) {
                for (int i = 0; i < n; i++) run_once(&actions, child);
                _exit(0);
            }
        }
        int status, failed = 0;
        while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        double elapsed = now_us() - start;
        if (failed) return 3;
        printf("%.1f\n", workers * (double)n / (elapsed / 1e6));
        return 0;
    }

    double *samples = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) {
        if (sleep_ms) usleep(sleep_ms * 1000);
        double start = now_us();
        run_once(&actions, child);
        samples[i] = now_us() - start;
    }
    for (int i = 0; i < n; i++) printf("%.1f\n", samples[i]);
    return 0;
}
