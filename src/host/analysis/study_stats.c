/* The order study's statistics: confidence intervals, paired differences, t, sign and
 * Wilcoxon tests, Holm's correction (include/cnnkit/study.h). */
#include "cnnkit/study.h"

#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- statistics -------------------------------------------------------------------------- */

CK_API double ck_student_t975(int dof) {
    static const double t[30] = {12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119,
                                 2.3646243,  2.3060041, 2.2621572, 2.2281389, 2.2009852, 2.1788128,
                                 2.1603687,  2.1447867, 2.1314495, 2.1199053, 2.1098155, 2.1009220,
                                 2.0930241,  2.0859634, 2.0796138, 2.0738731, 2.0686576, 2.0638986,
                                 2.0595386,  2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725};
    if (dof < 1)
        return NAN;
    if (dof <= 30)
        return t[dof - 1];
    /* Cornish-Fisher expansion around the normal quantile (error < 1e-6 for dof > 30) */
    const double z = 1.959963984540054, v = dof;
    const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
    return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v) +
           (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v);
}

CK_API ck_status ck_mean_ci95(const double *x, int n, double *mean, double *half, double *sd) {
    if (!x || n < 1 || !mean || !half)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s",
                       !x      ? "x: is NULL"
                       : n < 1 ? "n: must be >= 1"
                               : "mean, half: NULL");
    double s = 0.0;
    for (int i = 0; i < n; ++i)
        s += x[i];
    const double m = s / n;
    double ss = 0.0;
    for (int i = 0; i < n; ++i)
        ss += (x[i] - m) * (x[i] - m);
    const double dev = n > 1 ? sqrt(ss / (n - 1)) : NAN;
    *mean = m;
    *half = n > 1 ? ck_student_t975(n - 1) * dev / sqrt((double)n) : NAN;
    if (sd)
        *sd = dev;
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_study_summarize(const ck_study_result *results, int n, int variant,
                                    ck_study_summary *out) {
    if ((!results && n > 0) || n < 0 || !out)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s",
                       n < 0  ? "n: must be >= 0"
                       : !out ? "out: is NULL"
                              : "results: is NULL");
    ck_study_summary s;
    memset(&s, 0, sizeof s);
    s.variant = variant;
    double *acc = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    double *gap = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    if (!acc || !gap) {
        ck_host_free(NULL, acc);
        ck_host_free(NULL, gap);
        return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "results: out of memory for %d", n);
    }
    double ips = 0.0;
    int ngap = 0;
    for (int i = 0; i < n; ++i) {
        const ck_study_result *r = &results[i];
        if (r->variant != variant)
            continue;
        if (s.runs == 0) {
            s.n_bn = r->n_bn;
            s.n_dropout = r->n_dropout;
            memcpy(s.bn_layer, r->bn_layer, sizeof s.bn_layer);
            memcpy(s.dropout_layer, r->dropout_layer, sizeof s.dropout_layer);
        }
        acc[s.runs] = r->test_accuracy;
        if (!isnan(r->gap))
            gap[ngap++] = r->gap;
        ips += r->images_per_s;
        for (int k = 0; k < s.n_bn && k < r->n_bn; ++k) {
            s.bn_shift[k] += r->bn_shift[k];
            s.bn_shift_moving[k] += r->bn_shift_moving[k];
        }
        for (int k = 0; k < s.n_dropout && k < r->n_dropout; ++k)
            s.dropout_zeroed[k] += r->dropout_zeroed[k];
        s.runs++;
    }
    if (s.runs == 0) {
        s.acc_mean = s.acc_ci95 = s.acc_sd = s.gap_mean = s.gap_ci95 = s.images_per_s = NAN;
    } else {
        ck_mean_ci95(acc, s.runs, &s.acc_mean, &s.acc_ci95, &s.acc_sd);
        if (ngap)
            ck_mean_ci95(gap, ngap, &s.gap_mean, &s.gap_ci95, NULL);
        else
            s.gap_mean = s.gap_ci95 = NAN;
        s.images_per_s = ips / s.runs;
        for (int k = 0; k < s.n_bn; ++k) {
            s.bn_shift[k] /= s.runs;
            s.bn_shift_moving[k] /= s.runs;
        }
        for (int k = 0; k < s.n_dropout; ++k)
            s.dropout_zeroed[k] /= s.runs;
    }
    ck_host_free(NULL, acc);
    ck_host_free(NULL, gap);
    *out = s;
    return CK_STATUS_SUCCESS;
}

/* The per-seed differences variant - baseline (test accuracy) into d (n entries of room); returns
 * how many. */
static int paired_diffs(const ck_study_result *results, int n, int variant, int baseline,
                        double *d) {
    int k = 0;
    for (int i = 0; i < n; ++i) {
        if (results[i].variant != variant)
            continue;
        for (int j = 0; j < n; ++j) /* the baseline's run with the same seed */
            if (results[j].variant == baseline && results[j].seed == results[i].seed) {
                d[k++] = results[i].test_accuracy - results[j].test_accuracy;
                break;
            }
    }
    return k;
}

CK_API ck_status ck_study_paired_diff(const ck_study_result *results, int n, int variant,
                                      int baseline, double *mean, double *half, int *pairs) {
    if ((!results && n > 0) || n < 0 || !mean || !half || !pairs)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s",
                       n < 0               ? "n: must be >= 0"
                       : !results && n > 0 ? "results: is NULL"
                                           : "mean, half, pairs: NULL");
    *mean = *half = NAN;
    *pairs = 0;
    double *d = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    if (!d)
        return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "results: out of memory for %d", n);
    const int k = paired_diffs(results, n, variant, baseline, d);
    *pairs = k;
    if (k > 0)
        ck_mean_ci95(d, k, mean, half, NULL);
    ck_host_free(NULL, d);
    return CK_STATUS_SUCCESS;
}

/* ---- tests on paired differences ------------------------------------------------------------ */

/* log Gamma(k / 2) for k >= 1, from Gamma(1/2) = sqrt(pi), Gamma(1) = 1 and Gamma(x + 1) =
 * x Gamma(x) (the t distribution only needs half-integers; libm's lgamma sets a global). */
static double log_gamma_half(int k) {
    double r = k % 2 ? 0.5 * log(3.14159265358979323846) : 0.0;
    for (int j = k % 2 ? 1 : 2; j < k; j += 2)
        r += log(0.5 * j);
    return r;
}

/* The continued fraction of the regularized incomplete beta function (modified Lentz). */
static double beta_cf(double a, double b, double x) {
    const double tiny = 1e-300;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / (fabs(d) < tiny ? tiny : d);
    double h = d;
    for (int m = 1; m <= 500; ++m) {
        const double m2 = 2.0 * m;
        double aa = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = 1.0 / (fabs(d) < tiny ? tiny : d);
        c = 1.0 + aa / c;
        c = fabs(c) < tiny ? tiny : c;
        h *= d * c;
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2));
        d = 1.0 + aa * d;
        d = 1.0 / (fabs(d) < tiny ? tiny : d);
        c = 1.0 + aa / c;
        c = fabs(c) < tiny ? tiny : c;
        const double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-15)
            break;
    }
    return h;
}

/* I_x(ka / 2, kb / 2), the regularized incomplete beta function at half-integer parameters. */
static double beta_inc_half(int ka, int kb, double x) {
    if (x <= 0.0)
        return 0.0;
    if (x >= 1.0)
        return 1.0;
    const double a = 0.5 * ka, b = 0.5 * kb;
    const double front = exp(log_gamma_half(ka + kb) - log_gamma_half(ka) - log_gamma_half(kb) +
                             a * log(x) + b * log1p(-x));
    if (x < (a + 1.0) / (a + b + 2.0))
        return front * beta_cf(a, b, x) / a;
    return 1.0 - front * beta_cf(b, a, 1.0 - x) / b;
}

CK_API double ck_student_t_p(double t, int dof) {
    if (dof < 1 || isnan(t))
        return NAN;
    if (isinf(t))
        return 0.0;
    /* P(|T| >= |t|) = I_{dof / (dof + t^2)}(dof / 2, 1 / 2) */
    return beta_inc_half(dof, 1, dof / (dof + t * t));
}

/* 1 when one of d[0..n) is NaN: no test can order it. */
static int any_nan(const double *d, int n) {
    for (int i = 0; i < n; ++i)
        if (isnan(d[i]))
            return 1;
    return 0;
}

CK_API double ck_sign_test_p(const double *d, int n) {
    if (!d || n < 0 || any_nan(d, n))
        return NAN;
    int pos = 0, neg = 0;
    for (int i = 0; i < n; ++i) {
        pos += d[i] > 0.0;
        neg += d[i] < 0.0;
    }
    const int m = pos + neg, k = pos < neg ? pos : neg;
    double term = ldexp(1.0, -m), tail = 0.0; /* C(m, i) / 2^m for i = 0, 1, ... */
    for (int i = 0; i <= k; ++i) {
        tail += term;
        term = term * (m - i) / (i + 1);
    }
    return fmin(1.0, 2.0 * tail);
}

static int cmp_abs(const void *a, const void *b) {
    const double x = fabs(*(const double *)a), y = fabs(*(const double *)b);
    return (x > y) - (x < y);
}

CK_API double ck_wilcoxon_p(const double *d, int n) {
    if (!d || n < 0 || any_nan(d, n))
        return NAN;
    double *a = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    if (!a)
        return NAN;
    int m = 0;
    for (int i = 0; i < n; ++i)
        if (d[i] != 0.0)
            a[m++] = d[i];
    if (m == 0) {
        ck_host_free(NULL, a);
        return 1.0;
    }
    if (m > CK_WILCOXON_MAX_N) { /* the convolution's m (m + 1) cells and m^3 work */
        ck_host_free(NULL, a);
        return NAN;
    }
    qsort(a, (size_t)m, sizeof *a, cmp_abs);
    /* twice the mid-ranks: integers (first + last position of a tie group, 1-based) */
    const int total = m * (m + 1); /* sum of the doubled ranks */
    double *dist = (double *)ck_host_calloc(NULL, (size_t)total + 1, sizeof(double));
    double *next = (double *)ck_host_calloc(NULL, (size_t)total + 1, sizeof(double));
    if (!dist || !next) {
        ck_host_free(NULL, a);
        ck_host_free(NULL, dist);
        ck_host_free(NULL, next);
        return NAN;
    }
    int observed = 0, top = 0;
    dist[0] = 1.0;
    for (int i = 0; i < m;) {
        int j = i;
        /* tied to a relative 1e-9: differences of accuracies k / N computed in floating point
         * that are the same k differ in their last bits (11/10000 - 0 vs 22/10000 - 11/10000) */
        while (j + 1 < m && fabs(a[j + 1]) - fabs(a[i]) <= 1e-9 * fabs(a[j + 1]))
            ++j;
        const int r2 = (i + 1) + (j + 1);
        for (int k = i; k <= j; ++k) {
            if (a[k] > 0.0)
                observed += r2;
            /* one more rank, + or - with probability 1/2 each */
            for (int s = 0; s <= top + r2; ++s)
                next[s] = 0.5 * ((s <= top ? dist[s] : 0.0) + (s >= r2 ? dist[s - r2] : 0.0));
            top += r2;
            double *t = dist;
            dist = next;
            next = t;
        }
        i = j + 1;
    }
    const int dev = abs(2 * observed - total);
    double p = 0.0;
    for (int s = 0; s <= total; ++s)
        if (abs(2 * s - total) >= dev)
            p += dist[s];
    ck_host_free(NULL, a);
    ck_host_free(NULL, dist);
    ck_host_free(NULL, next);
    return fmin(1.0, p);
}

CK_API ck_status ck_holm(const double *p, int m, double *adjusted) {
    if (!p || !adjusted || m < 0)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s",
                       !p          ? "p: is NULL"
                       : !adjusted ? "adjusted: is NULL"
                                   : "m: must be >= 0");
    int *idx = (int *)ck_host_alloc(NULL, sizeof(int) * (size_t)(m ? m : 1));
    if (!idx)
        return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "m: out of memory for %d p-values", m);
    int k = 0;
    for (int i = 0; i < m; ++i) {
        adjusted[i] = NAN;
        if (!isnan(p[i]))
            idx[k++] = i;
    }
    for (int i = 1; i < k; ++i) /* insertion sort by p, ascending (k is a handful) */
        for (int j = i; j > 0 && p[idx[j]] < p[idx[j - 1]]; --j) {
            const int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    double run = 0.0;
    for (int j = 0; j < k; ++j) {
        run = fmax(run, fmin(1.0, (double)(k - j) * p[idx[j]]));
        adjusted[idx[j]] = run;
    }
    ck_host_free(NULL, idx);
    return CK_STATUS_SUCCESS;
}

CK_API ck_status ck_study_paired_tests(const ck_study_result *results, int n, const int *variants,
                                       int nv, int baseline, ck_paired_test *out) {
    if ((!results && n > 0) || n < 0 || !variants || nv < 1 || !out)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "%s",
                       n < 0               ? "n: must be >= 0"
                       : !results && n > 0 ? "results: is NULL"
                       : !variants         ? "variants: is NULL"
                       : nv < 1            ? "nv: must be >= 1"
                                           : "out: is NULL");
    double *d = (double *)ck_host_alloc(NULL, sizeof(double) * (size_t)(n ? n : 1));
    double *pt = (double *)ck_host_alloc(NULL, sizeof(double) * 4 * (size_t)nv);
    if (!d || !pt) {
        ck_host_free(NULL, d);
        ck_host_free(NULL, pt);
        return ck_fail(NULL, CK_STATUS_ALLOC_FAILED, "results: out of memory for %d", n);
    }
    double *pw = pt + nv, *ht = pt + 2 * nv, *hw = pt + 3 * nv;
    for (int v = 0; v < nv; ++v) {
        ck_paired_test *o = &out[v];
        memset(o, 0, sizeof *o);
        o->variant = variants[v];
        o->mean = o->half = o->p_t = o->p_sign = o->p_wilcoxon = NAN;
        const int k = paired_diffs(results, n, variants[v], baseline, d);
        o->pairs = k;
        if (k > 0)
            ck_mean_ci95(d, k, &o->mean, &o->half, NULL);
        if (k >= 2) {
            double sd, mean, half;
            ck_mean_ci95(d, k, &mean, &half, &sd);
            o->p_t = isnan(mean) ? NAN /* a NaN accuracy: no test */
                     : sd > 0.0  ? ck_student_t_p(mean / (sd / sqrt((double)k)), k - 1)
                                 : (mean != 0.0 ? 0.0 : 1.0);
            o->p_sign = ck_sign_test_p(d, k);
            o->p_wilcoxon = ck_wilcoxon_p(d, k);
        }
        pt[v] = o->p_t;
        pw[v] = o->p_wilcoxon;
    }
    ck_status st = ck_holm(pt, nv, ht);
    if (st == CK_STATUS_SUCCESS)
        st = ck_holm(pw, nv, hw);
    for (int v = 0; st == CK_STATUS_SUCCESS && v < nv; ++v) {
        ck_paired_test *o = &out[v];
        o->p_t_holm = ht[v];
        o->p_wilcoxon_holm = hw[v];
        const int excludes = o->pairs >= 2 && (o->mean - o->half > 0.0 || o->mean + o->half < 0.0);
        o->verdict = excludes && ht[v] < 0.05 && hw[v] < 0.05 ? CK_PAIRED_DIFFERENT
                     : excludes                               ? CK_PAIRED_FRAGILE
                                                              : CK_PAIRED_NONE;
    }
    ck_host_free(NULL, d);
    ck_host_free(NULL, pt);
    return st;
}
