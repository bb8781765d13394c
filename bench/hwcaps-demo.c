/* hwcaps-demo: a compute-heavy program whose speed depends on the ISA level it is built for.
 *
 * Built once per level (gcc -O3 -march=x86-64{,-v2,-v3,-v4} -DLEVEL=...), it prints the level
 * it was built for, then (with an iteration count argument) runs a float kernel that gcc
 * vectorizes with SSE2, AVX2+FMA or AVX-512 depending on -march, and prints how long it took.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef LEVEL
#define LEVEL "baseline"
#endif

#define N 4096

static float a[N], b[N], c[N];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* y = a*x + b, then a dot product: the shape of most numeric inner loops. */
static float kernel(int rounds) {
    float acc = 0.0f;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < N; i++)
            c[i] = a[i] * b[i] + c[i] * 0.5f;
        float dot = 0.0f;
        for (int i = 0; i < N; i++)
            dot += c[i] * a[i];
        acc += dot * 1e-6f;
    }
    return acc;
}

int main(int argc, char **argv) {
    printf("%s\n", LEVEL);
    if (argc < 2)
        return 0;
    int rounds = atoi(argv[1]);
    for (int i = 0; i < N; i++) {
        a[i] = (float)(i % 17) * 0.25f;
        b[i] = (float)(i % 13) * 0.5f;
        c[i] = 0.0f;
    }
    double start = now();
    float result = kernel(rounds);
    double elapsed = now() - start;
    printf("rounds=%d result=%.3f seconds=%.4f\n", rounds, result, elapsed);
    return 0;
}
