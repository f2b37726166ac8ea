/* Residual placements of He et al. 2016 (include/cnnkit/study.h, ck_study_residual_variant): the
 * units of a post-activation ResNet found once, then the list written out again with each
 * unit's BN and ReLU moved. */
#include "cnnkit/study.h"

#include "internal.h"
#include "study_internal.h"

#include <stdio.h>
#include <string.h>

/* The parts of one post-activation unit: c1-b1-r1-c2-bn (branch) + the shortcut, add, relu. */
typedef struct unit {
    int add, bn, relu, c1, proj; /* proj: a Conv2D shortcut reading c1's input, else -1 */
} unit;

static int in0(const ck_layer_desc *L, int i) {
    return L[i].num_inputs ? L[i].inputs[0] : i - 1;
}

static int reads(const ck_layer_desc *L, int i, int j) {
    if (L[i].num_inputs == 0)
        return j == i - 1;
    for (int k = 0; k < L[i].num_inputs; k++)
        if (L[i].inputs[k] == j)
            return 1;
    return 0;
}

static int is_relu(const ck_layer_desc *d) {
    return d->type == CK_LAYER_ACTIVATION && d->activation == CK_ACT_RELU;
}

/* The one reader of layer j, -1 when it has none or several. */
static int only_reader(const ck_layer_desc *L, int n, int j) {
    int r = -1;
    for (int i = j + 1; i < n; i++)
        if (reads(L, i, j)) {
            if (r >= 0)
                return -1;
            r = i;
        }
    return r;
}

/* The branch's first Conv2D of a unit whose branch ends in BN bn: Conv-BN-ReLU-Conv-BN walked
 * back; -1 when the branch is not that. */
static int branch_conv1(const ck_layer_desc *L, int bn) {
    const int c2 = in0(L, bn), r1 = c2 >= 0 ? in0(L, c2) : -1, b1 = r1 >= 0 ? in0(L, r1) : -1;
    const int c1 = b1 >= 0 ? in0(L, b1) : -1;
    if (c1 < 0 || L[c2].type != CK_LAYER_CONV2D || !is_relu(&L[r1]) ||
        L[b1].type != CK_LAYER_BATCHNORM || L[c1].type != CK_LAYER_CONV2D)
        return -1;
    return c1;
}

/* Add a ends a post-activation unit: two inputs, one (the branch) Conv-BN-ReLU-Conv-BN, and one
 * reader, a ReLU Activation. 0 when not. */
static int find_unit(const ck_layer_desc *L, int n, int a, unit *u) {
    if (L[a].type != CK_LAYER_ADD || L[a].num_inputs != 2)
        return 0;
    const int r = only_reader(L, n, a);
    if (r < 0 || !is_relu(&L[r]))
        return 0;
    for (int k = 0; k < 2; k++) {
        const int b = L[a].inputs[k], s = L[a].inputs[1 - k];
        if (b < 0 || L[b].type != CK_LAYER_BATCHNORM || branch_conv1(L, b) < 0)
            continue;
        u->add = a;
        u->bn = b;
        u->relu = r;
        u->c1 = branch_conv1(L, b);
        u->proj = s >= 0 && L[s].type == CK_LAYER_CONV2D && in0(L, s) == in0(L, u->c1) ? s : -1;
        return 1;
    }
    return 0;
}

const char *ck_study_resid_unit_text(int placement) {
    static const char *const text[] = {"C-B-R-C-B + x, R", "C-B-R-C + x, B-R", "C-B-R-C-B-R + x",
                                       "R-C-B-R-C-B + x", "B-R-C-B-R-C + x"};
    return placement >= 0 && placement <= CK_RESID_FULL_PREACT ? text[placement] : NULL;
}

int ck_study_resid_units(const ck_layer_desc *layers, int count) {
    int n = 0;
    for (int a = 0; layers && a < count; a++) {
        unit u;
        if (layers[a].type != CK_LAYER_ADD)
            continue;
        if (!find_unit(layers, count, a, &u))
            return 0;
        n++;
    }
    return n;
}

/* The output list: at most count layers plus two per unit and two at the end. */
typedef struct out_list {
    ck_layer_desc *d;
    int n;
} out_list;

static int emit(out_list *o, const ck_layer_desc *src, int input) {
    ck_layer_desc d = *src;
    d.name[0] = 0;
    d.num_inputs = 1;
    d.inputs[0] = input;
    o->d[o->n] = d;
    return o->n++;
}

CK_API ck_status ck_study_residual_variant(const ck_layer_desc *layers, int count, int placement,
                                           ck_layer_desc **out, int *out_count, char *err,
                                           size_t err_len) {
    ck_errbuf_printf(err, err_len, "%s", "");
    if (!layers || count < 1 || !out || !out_count) {
        ck_errbuf_printf(err, err_len, "%s", "layers/out: NULL or count < 1");
        return CK_STATUS_BAD_PARAM;
    }
    *out = NULL;
    *out_count = 0;
    if (!ck_study_resid_unit_text(placement)) {
        ck_errbuf_printf(err, err_len, "placement: %d is not supported", placement);
        return CK_STATUS_BAD_PARAM;
    }
    /* role[i]: which unit layer i is the Add (ADD), branch BN (BN), ReLU (RELU), first Conv2D
     * (C1) or projection (PROJ) of; unit_of[i] the unit */
    enum { OTHER, ADD, BN, RELU, C1, PROJ, STEM };
    unsigned char *role = (unsigned char *)ck_host_realloc(NULL, NULL, (size_t)count);
    int *unit_of = (int *)ck_host_realloc(NULL, NULL, sizeof(int) * (size_t)count);
    int *map = (int *)ck_host_realloc(NULL, NULL, sizeof(int) * (size_t)count);
    unit *units = (unit *)ck_host_realloc(NULL, NULL, sizeof(unit) * (size_t)count);
    int *pre = (int *)ck_host_realloc(NULL, NULL, sizeof(int) * (size_t)count);
    out_list o = {(ck_layer_desc *)ck_host_realloc(NULL, NULL,
                                                   sizeof(ck_layer_desc) * ((size_t)count * 3 + 2)),
                  0};
    ck_status st = CK_STATUS_SUCCESS;
    if (!role || !unit_of || !map || !units || !pre || !o.d) {
        st = CK_STATUS_ALLOC_FAILED;
        goto done;
    }
    memset(role, OTHER, (size_t)count);
    int nu = 0;
    for (int a = 0; a < count; a++) {
        if (layers[a].type != CK_LAYER_ADD)
            continue;
        unit *u = &units[nu];
        if (!find_unit(layers, count, a, u)) {
            ck_errbuf_printf(err, err_len,
                             "layers[%d] (%s): an Add that does not end a post-activation "
                             "residual unit (branch Conv2D-BN-ReLU-Conv2D-BN, read by one ReLU)",
                             a, layers[a].name[0] ? layers[a].name : "Add");
            st = CK_STATUS_BAD_PARAM;
            goto done;
        }
        role[u->add] = ADD;
        role[u->bn] = BN;
        role[u->relu] = RELU;
        role[u->c1] = C1;
        if (u->proj >= 0)
            role[u->proj] = PROJ;
        unit_of[u->add] = unit_of[u->bn] = unit_of[u->relu] = unit_of[u->c1] = nu;
        if (u->proj >= 0)
            unit_of[u->proj] = nu;
        pre[nu] = -1;
        nu++;
    }
    if (nu == 0) {
        ck_errbuf_printf(err, err_len, "%s", "layers: no residual unit (Add) found");
        st = CK_STATUS_BAD_PARAM;
        goto done;
    }
    /* full pre-activation: a stem BN-ReLU before the first unit becomes the BN-ReLU after the
     * last Add (He et al. 2016, Sec. 4.1: the extra activation after the last unit), so the
     * layer counts stay; without one the last unit's BN and ReLU are copied there */
    int stem_bn = -1, stem_relu = -1;
    if (placement == CK_RESID_FULL_PREACT) {
        const int x = in0(layers, units[0].c1), b = x >= 0 ? in0(layers, x) : -1;
        if (b >= 0 && is_relu(&layers[x]) && layers[b].type == CK_LAYER_BATCHNORM &&
            role[b] == OTHER && only_reader(layers, count, b) == x) {
            stem_bn = b;
            stem_relu = x;
            role[b] = role[x] = STEM;
        }
    }
    const ck_layer_desc *last_bn = &layers[stem_bn >= 0 ? stem_bn : units[nu - 1].bn];
    const ck_layer_desc *last_relu = &layers[stem_relu >= 0 ? stem_relu : units[nu - 1].relu];
    const int moves_bn = placement == CK_RESID_BN_AFTER_ADD || placement == CK_RESID_FULL_PREACT;
    const int moves_relu = placement != CK_RESID_ORIGINAL && placement != CK_RESID_BN_AFTER_ADD;
    for (int i = 0; i < count; i++) {
        const ck_layer_desc *d = &layers[i];
        const unit *u = role[i] == OTHER || role[i] == STEM ? NULL : &units[unit_of[i]];
        /* a layer that moves (or goes): its readers read what it read */
        if (role[i] == STEM || (role[i] == BN && moves_bn) || (role[i] == RELU && moves_relu)) {
            const int src = role[i] == RELU ? u->add : in0(layers, i);
            map[i] = src < 0 ? src : map[src]; /* a stem BN may read the model input */
            continue;
        }
        ck_layer_desc e = *d;
        e.name[0] = 0;
        e.num_inputs = d->num_inputs ? d->num_inputs : 1;
        for (int k = 0; k < e.num_inputs; k++) {
            const int s = d->num_inputs ? d->inputs[k] : i - 1;
            e.inputs[k] = s < 0 ? s : map[s];
        }
        if (role[i] == C1 && placement == CK_RESID_RELU_PREACT)
            e.inputs[0] = emit(&o, &layers[u->relu], e.inputs[0]);
        if ((role[i] == C1 || role[i] == PROJ) && placement == CK_RESID_FULL_PREACT) {
            const int uk = unit_of[i];
            if (pre[uk] < 0) /* one BN-ReLU for both paths of a unit */
                pre[uk] =
                    emit(&o, &layers[units[uk].relu], emit(&o, &layers[units[uk].bn], e.inputs[0]));
            e.inputs[0] = pre[uk];
        }
        if (role[i] == ADD && placement == CK_RESID_RELU_BEFORE_ADD)
            for (int k = 0; k < e.num_inputs; k++)
                if (d->inputs[k] == u->bn)
                    e.inputs[k] = emit(&o, &layers[u->relu], e.inputs[k]);
        o.d[o.n] = e;
        map[i] = o.n++;
        if (role[i] == ADD && placement == CK_RESID_BN_AFTER_ADD)
            map[i] = emit(&o, &layers[u->bn], map[i]);
        if (role[i] == ADD && placement == CK_RESID_FULL_PREACT && unit_of[i] == nu - 1)
            map[i] = emit(&o, last_relu, emit(&o, last_bn, map[i]));
    }
    /* the model's input shape stays on its first layer, whichever layer that now is */
    for (int i = 1; i < o.n; i++)
        o.d[i].input_h = o.d[i].input_w = o.d[i].input_c = o.d[i].input_flat = 0;
    o.d[0].input_h = layers[0].input_h;
    o.d[0].input_w = layers[0].input_w;
    o.d[0].input_c = layers[0].input_c;
    o.d[0].input_flat = layers[0].input_flat;
    *out = o.d;
    *out_count = o.n;
    o.d = NULL;
done:
    ck_host_free(NULL, role);
    ck_host_free(NULL, unit_of);
    ck_host_free(NULL, map);
    ck_host_free(NULL, units);
    ck_host_free(NULL, pre);
    ck_host_free(NULL, o.d);
    if (st == CK_STATUS_ALLOC_FAILED)
        ck_errbuf_printf(err, err_len, "%s", "out of memory for the residual variant");
    return st;
}

CK_API void ck_study_residual_free(ck_layer_desc *layers) {
    ck_host_free(NULL, layers);
}
