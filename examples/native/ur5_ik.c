/* Inverse kinematics of the UR5 arm in plain C, on the kernel gradcomp exported as a native library.
 *
 * examples/native_ik.py writes ur5.h and libur5.so into a directory DIR, then builds and runs this:
 *
 *     cc -std=c99 -Wall -Werror -pedantic -O2 -I DIR ur5_ik.c DIR/libur5.so -lm -Wl,-rpath,DIR -o ur5_ik
 *     ./ur5_ik q1 q2 q3 q4 q5 q6 tx ty tz
 *
 * From joint angles q (the start) to a tool position t by Levenberg-Marquardt,
 *     (J J^T + lambda I) y = t - p(q),  dq = J^T y,
 * with ur5() for p(q) and ur5_jacobian() for J (3 x 6, row-major).  No Python, no allocation.
 * Prints the iterations taken, the final error and the joint angles (%.17g, to compare bit for bit).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ur5.h"

static double error_norm(const double *target, const double *p) {
    double e0 = target[0] - p[0], e1 = target[1] - p[1], e2 = target[2] - p[2];
    return sqrt(e0 * e0 + e1 * e1 + e2 * e2);
}

/* Solve the 3 x 3 system a y = e (a symmetric positive definite) by Cholesky. */
static void solve3(double a[3][3], const double *e, double *y) {
    double l[3][3] = {{0}}, z[3];
    int i, j, k;
    for (i = 0; i < 3; i++)
        for (j = 0; j <= i; j++) {
            double s = a[i][j];
            for (k = 0; k < j; k++) s -= l[i][k] * l[j][k];
            l[i][j] = i == j ? sqrt(s) : s / l[j][j];
        }
    for (i = 0; i < 3; i++) {
        z[i] = e[i];
        for (k = 0; k < i; k++) z[i] -= l[i][k] * z[k];
        z[i] /= l[i][i];
    }
    for (i = 2; i >= 0; i--) {
        y[i] = z[i];
        for (k = i + 1; k < 3; k++) y[i] -= l[k][i] * y[k];
        y[i] /= l[i][i];
    }
}

int main(int argc, char **argv) {
    double q[UR5_ARG0_SIZE], target[UR5_Y_SIZE], p[UR5_Y_SIZE], jac[UR5_JAC_ARG0_SIZE];
    double lambda = 1e-3, error;
    int i, j, k, iteration;
    if (argc != 1 + UR5_ARG0_SIZE + UR5_Y_SIZE) {
        fprintf(stderr, "usage: %s q1 .. q6 tx ty tz\n", argv[0]);
        return 2;
    }
    for (i = 0; i < UR5_ARG0_SIZE; i++) q[i] = atof(argv[1 + i]);
    for (i = 0; i < UR5_Y_SIZE; i++) target[i] = atof(argv[1 + UR5_ARG0_SIZE + i]);
    if (ur5(q, p) != UR5_OK) return 1;
    error = error_norm(target, p);
    for (iteration = 0; iteration < 100 && error > 1e-9; iteration++) {
        double a[3][3], e[3], y[3], trial[UR5_ARG0_SIZE], trial_p[UR5_Y_SIZE], trial_error;
        if (ur5_jacobian(q, jac) != UR5_OK) return 1;
        for (i = 0; i < 3; i++) {
            e[i] = target[i] - p[i];
            for (j = 0; j < 3; j++) {
                a[i][j] = i == j ? lambda : 0.0;
                for (k = 0; k < UR5_ARG0_SIZE; k++) a[i][j] += jac[i * UR5_ARG0_SIZE + k] * jac[j * UR5_ARG0_SIZE + k];
            }
        }
        solve3(a, e, y);
        for (k = 0; k < UR5_ARG0_SIZE; k++)
            trial[k] = q[k] + jac[k] * y[0] + jac[UR5_ARG0_SIZE + k] * y[1] + jac[2 * UR5_ARG0_SIZE + k] * y[2];
        if (ur5(trial, trial_p) != UR5_OK) return 1;
        trial_error = error_norm(target, trial_p);
        if (trial_error < error) {
            for (k = 0; k < UR5_ARG0_SIZE; k++) q[k] = trial[k];
            for (i = 0; i < 3; i++) p[i] = trial_p[i];
            error = trial_error;
            lambda *= 0.5;
        } else {
            lambda *= 10.0;
        }
    }
    printf("iterations %d\nerror %.3g\nq", iteration, error);
    for (k = 0; k < UR5_ARG0_SIZE; k++) printf(" %.17g", q[k]);
    printf("\n");
    return error <= 1e-9 ? 0 : 3;
}
