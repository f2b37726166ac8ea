/* The SVG plots: cnnkit train's curves (--plot) and cnnkit study's accuracies (--svg). */
#include <math.h>
#include <stdio.h>

#include "cli.h"

int write_train_svg(const char *path, const ck_epoch_result *h, int first, int n) {
    char tmp[4096];
    FILE *f = open_replacing(path, tmp, sizeof tmp);
    if (!f)
        return -1;
    h += first - 1;
    /* the right panel ends at 510 + 400: 30 px of margin after it */
    const int pw = 400, ph = 260, top = 50, left[2] = {60, 510}, W = left[1] + pw + 30, H = 360;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" "
            "height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    int has_val = 0;
    for (int i = 0; i < n; ++i)
        has_val |= !isnan(h[i].val_loss);
    for (int panel = 0; panel < 2; ++panel) {
        double lo = 1e30, hi = -1e30;
        for (int i = 0; i < n; ++i) {
            double a = panel ? h[i].accuracy : h[i].loss;
            double b = panel ? h[i].val_accuracy : h[i].val_loss;
            lo = fmin(lo, fmin(a, isnan(b) ? a : b));
            hi = fmax(hi, fmax(a, isnan(b) ? a : b));
        }
        if (hi - lo < 1e-9) {
            hi += 0.5;
            lo -= 0.5;
        }
        double pad = 0.05 * (hi - lo);
        /* no axis below 0 for a loss or an accuracy, nor above 1 for an accuracy (a single
         * epoch's point would otherwise sit in a band from -0.44) */
        lo = fmax(lo - pad, 0.0);
        hi = panel ? fmin(hi + pad, 1.0) : hi + pad;
        const int x0 = left[panel];
        fprintf(f, "<text x=\"%d\" y=\"30\" font-size=\"15\">%s</text>\n", x0,
                panel ? "accuracy" : "loss");
        fprintf(f,
                "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                "stroke=\"#888\"/>\n",
                x0, top, pw, ph);
        for (int k = 0; k <= 4; ++k) {
            double v = lo + (hi - lo) * k / 4.0;
            int y = top + ph - (int)(ph * k / 4.0);
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.3f</text>\n", x0 - 4, y + 4,
                    v);
        }
        for (int s = 0; s < 1 + has_val; ++s) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                    s ? "#d62728" : "#1f77b4");
            for (int i = 0; i < n; ++i) {
                double v = s ? (panel ? h[i].val_accuracy : h[i].val_loss)
                             : (panel ? h[i].accuracy : h[i].loss);
                if (isnan(v))
                    continue;
                double x = x0 + (n > 1 ? (double)pw * i / (n - 1) : pw / 2.0);
                double y = top + ph - ph * (v - lo) / (hi - lo);
                fprintf(f, "%.1f,%.1f ", x, y);
            }
            fprintf(f, "\"/>\n");
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">epoch (%d..%d)</text>\n",
                x0 + pw / 2, top + ph + 20, first, first + n - 1);
    }
    fprintf(f, "<text x=\"60\" y=\"%d\" fill=\"#1f77b4\">train</text>", H - 15);
    if (has_val)
        fprintf(f, "<text x=\"110\" y=\"%d\" fill=\"#d62728\">validation</text>", H - 15);
    fprintf(f, "\n</svg>\n");
    return close_replacing(f, tmp);
}

int write_study_svg(const char *path, const ck_study_variant *v, int nv, const ck_study_summary *sm,
                    const ck_study_result *res, int nres, int seeds) {
    char tmp[4096];
    FILE *f = open_replacing(path, tmp, sizeof tmp);
    if (!f)
        return -1;
    int shown = 0;
    double lo = 1e30, hi = -1e30;
    for (int i = 0; i < nv; ++i) {
        if (sm[i].runs == 0)
            continue;
        ++shown;
        const double ci = isfinite(sm[i].acc_ci95) ? sm[i].acc_ci95 : 0.0;
        lo = fmin(lo, sm[i].acc_mean - ci);
        hi = fmax(hi, sm[i].acc_mean + ci);
    }
    for (int i = 0; i < nres; ++i) {
        lo = fmin(lo, res[i].test_accuracy);
        hi = fmax(hi, res[i].test_accuracy);
    }
    if (shown == 0) {
        lo = 0.0;
        hi = 1.0;
    }
    if (hi - lo < 1e-3) {
        hi += 0.005;
        lo -= 0.005;
    }
    const double pad = 0.08 * (hi - lo);
    lo -= pad;
    hi += pad;
    const int left = 70, top = 50, pw = 120 * (shown > 4 ? shown : 4), ph = 300;
    const int W = left + pw + 30, H = top + ph + 80;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" "
            "height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    fprintf(f,
            "<text x=\"%d\" y=\"30\" font-size=\"15\">test accuracy per variant: mean and 95%% "
            "interval (Student t) over %d seed%s</text>\n",
            left, seeds, seeds == 1 ? "" : "s");
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n",
            left, top, pw, ph);
    for (int k = 0; k <= 4; ++k) {
        const double val = lo + (hi - lo) * k / 4.0;
        const int y = top + ph - (int)(ph * k / 4.0);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.4f</text>\n", left - 4, y + 4,
                val);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#eee\"/>\n", left + 1, y,
                left + pw - 1, y);
    }
#define YPOS(val) (top + ph - ph * ((val)-lo) / (hi - lo))
    int slot = 0;
    for (int i = 0; i < nv; ++i) {
        if (sm[i].runs == 0)
            continue;
        const double x = left + pw * (slot + 0.5) / (shown > 0 ? shown : 1);
        ++slot;
        for (int r = 0; r < nres; ++r)
            if (res[r].variant == i)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"#999\"/>\n", x + 14,
                        YPOS(res[r].test_accuracy));
        if (isfinite(sm[i].acc_ci95)) {
            const double y0 = YPOS(sm[i].acc_mean - sm[i].acc_ci95),
                         y1 = YPOS(sm[i].acc_mean + sm[i].acc_ci95);
            fprintf(f,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" "
                    "stroke-width=\"2\"/>\n",
                    x, y0, x, y1);
            fprintf(f,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" "
                    "stroke-width=\"2\"/>\n<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"#1f77b4\" stroke-width=\"2\"/>\n",
                    x - 8, y0, x + 8, y0, x - 8, y1, x + 8, y1);
        }
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#d62728\"/>\n", x,
                YPOS(sm[i].acc_mean));
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x, top + ph + 18,
                v[i].name);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#555\">%.4f</text>\n",
                x, top + ph + 34, sm[i].acc_mean);
    }
#undef YPOS
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" fill=\"#d62728\">mean</text><text x=\"%d\" y=\"%d\" "
            "fill=\"#1f77b4\">95%% interval</text><text x=\"%d\" y=\"%d\" fill=\"#999\">one "
            "seed</text>\n</svg>\n",
            left, H - 12, left + 50, H - 12, left + 150, H - 12);
    return close_replacing(f, tmp);
}
