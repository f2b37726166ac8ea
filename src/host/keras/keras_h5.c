/* Keras weights in HDF5, with libhdf5: the Keras 3 layout (layers/<group>/vars/<i>,
 * optimizer/vars/<i>) of .weights.h5 and of the model.weights.h5 inside a .keras archive, and the
 * legacy layout (model_weights/<layer>/ with a weight_names attribute) of whole-model .h5 files.
 * libhdf5 prints its error stack by default: every entry point turns that off and restores it. */
#include "keras_io.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct h5s {
    ck_context *ctx;
    const char *what;
    H5E_auto2_t old_fn;
    void *old_data;
} h5s;

static void quiet_begin(h5s *S) {
    H5Eget_auto2(H5E_DEFAULT, &S->old_fn, &S->old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
static void quiet_end(h5s *S) {
    H5Eset_auto2(H5E_DEFAULT, S->old_fn, S->old_data);
}

/* A file from memory (image) or disk (path); -1 when HDF5 can't open it. */
static hid_t open_file(const void *image, size_t len, const char *path) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0)
        return -1;
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG); /* closing the file closes everything in it */
    hid_t f = -1;
    if (image) {
        if (H5Pset_fapl_core(fapl, 1 << 16, 0) >= 0 &&
            H5Pset_file_image(fapl, (void *)image, len) >= 0)
            f = H5Fopen("keras-weights-image", H5F_ACC_RDONLY, fapl);
    } else {
        f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    }
    H5Pclose(fapl);
    return f;
}

/* Whether every component of a path exists (H5Lexists needs the parents to exist). */
static int path_exists(hid_t loc, const char *path) {
    char buf[256];
    if (strlen(path) >= sizeof buf)
        return 0;
    strcpy(buf, path);
    for (char *p = buf;; ++p) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
                return 0;
            if (!c)
                return 1;
            *p = c;
        }
    }
}

/* Releases up to three HDF5 identifiers of any kind (dataset, attribute, space, type); -1 skipped.
 */
static void h5_close3(hid_t a, hid_t b, hid_t c) {
    const hid_t ids[3] = {a, b, c};
    for (int i = 0; i < 3; ++i)
        if (ids[i] >= 0)
            H5Idec_ref(ids[i]);
}

static void shape_str(char *buf, size_t len, int rank, const long long *dims) {
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < rank && k < len; ++i)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", dims[i]);
    if (k < len)
        snprintf(buf + k, len - k, rank == 1 ? ",)" : ")");
}

/* 1 when dataset ds stores exactly `bytes` bytes. A corrupt object header can describe more
 * elements than its storage holds (libhdf5 1.10 then reads through a NULL buffer, found by
 * fuzz_keras_h5); Keras writes contiguous datasets with every element, so a contiguous or compact
 * dataset must store exactly its elements. */
static int storage_holds(hid_t ds, size_t bytes) {
    hid_t pl = H5Dget_create_plist(ds);
    const H5D_layout_t lay = pl >= 0 ? H5Pget_layout(pl) : H5D_LAYOUT_ERROR;
    if (pl >= 0)
        H5Pclose(pl);
    if (lay == H5D_CHUNKED) /* missing chunks read as fill values; compressed ones are smaller */
        return 1;
    return (lay == H5D_CONTIGUOUS || lay == H5D_COMPACT) &&
           (size_t)H5Dget_storage_size(ds) == bytes;
}

/* Reads dataset `path` (float, shape as v) into dst; a message names the layer and both shapes. */
static ck_status read_var(h5s *S, hid_t f, const char *path, const ck_kio_layer *L,
                          const ck_kio_var *v, int idx, float *dst) {
    char want[96], got[96];
    shape_str(want, sizeof want, v->rank, v->dims);
    if (!path_exists(f, path))
        return ck_fail(S->ctx, CK_STATUS_SHAPE_MISMATCH,
                       "%s: layer '%s' (%s): weight %d (%s, shape %s) is missing (no %s)", S->what,
                       L->name, L->cls, idx, v->role, want, path);
    hid_t ds = H5Dopen2(f, path, H5P_DEFAULT);
    hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
    hid_t ty = ds >= 0 ? H5Dget_type(ds) : -1;
    ck_status st = CK_STATUS_SUCCESS;
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[8];
    if (ds < 0 || sp < 0 || ty < 0 || rank < 0 || rank > 8 ||
        H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        st = ck_fail(S->ctx, CK_STATUS_BAD_PARAM,
                     "%s: layer '%s' (%s): %s is not a readable dataset", S->what, L->name, L->cls,
                     path);
    } else if (H5Tget_class(ty) != H5T_FLOAT) {
        st = ck_fail(S->ctx, CK_STATUS_BAD_PARAM,
                     "%s: layer '%s' (%s): weight %d (%s) is not floating point", S->what, L->name,
                     L->cls, idx, v->role);
    } else {
        long long fd[8];
        int same = rank == v->rank;
        for (int k = 0; k < rank; ++k) {
            fd[k] = (long long)dims[k];
            same = same && fd[k] == v->dims[k];
        }
        if (!same) {
            shape_str(got, sizeof got, rank, fd);
            st = ck_fail(S->ctx, CK_STATUS_SHAPE_MISMATCH,
                         "%s: layer '%s' (%s): weight %d (%s) has shape %s in the file, the model "
                         "needs %s",
                         S->what, L->name, L->cls, idx, v->role, got, want);
        } else if (!storage_holds(ds, (size_t)H5Sget_simple_extent_npoints(sp) * H5Tget_size(ty)) ||
                   H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
            st = ck_fail(S->ctx, CK_STATUS_BAD_PARAM,
                         "%s: layer '%s' (%s): reading weight %d (%s) failed (corrupt file?)",
                         S->what, L->name, L->cls, idx, v->role);
        }
    }
    h5_close3(ty, sp, ds);
    return st;
}

/* Number of links in group path; -1 when it is not a group. */
static long long group_size(hid_t f, const char *path) {
    if (!path_exists(f, path))
        return -1;
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    if (g < 0)
        return -1;
    H5G_info_t info;
    long long n = H5Gget_info(g, &info) < 0 ? -1 : (long long)info.nlinks;
    H5Gclose(g);
    return n;
}

/* A copy of s[0..n) (up to its first NUL) on ctx. */
static char *strndup_ctx(ck_context *ctx, const char *s, size_t n) {
    const size_t k = strnlen(s, n);
    char *d = (char *)ck_host_alloc(ctx, k + 1);
    if (d) {
        memcpy(d, s, k);
        d[k] = '\0';
    }
    return d;
}

static void free_strs(ck_context *ctx, char **s) {
    for (int i = 0; s && s[i]; ++i)
        ck_host_free(ctx, s[i]);
    ck_host_free(ctx, s);
}

/* A string array attribute (fixed or variable length) as NULL-terminated strings on ctx (free with
 * free_strs); NULL with *count 0 when absent or unreadable, and *oom set when out of memory. */
static char **read_str_attr(ck_context *ctx, hid_t obj, const char *name, int *count, int *oom) {
    *count = 0;
    *oom = 0;
    if (H5Aexists(obj, name) <= 0)
        return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ty = a >= 0 ? H5Aget_type(a) : -1;
    hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
    char **out = NULL;
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (ty >= 0 && H5Tget_class(ty) == H5T_STRING && n >= 0 && n <= 100000) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        out = (char **)ck_host_calloc(ctx, (size_t)n + 1, sizeof *out);
        *oom = !out;
        if (H5Tis_variable_str(ty) > 0) {
            /* HDF5 allocates the strings themselves; H5Dvlen_reclaim gives them back */
            char **tmp = (char **)ck_host_calloc(ctx, (size_t)n + 1, sizeof *tmp);
            *oom |= !tmp;
            H5Tset_size(mt, H5T_VARIABLE);
            if (tmp && out && H5Aread(a, mt, tmp) >= 0) {
                for (hssize_t i = 0; i < n; ++i)
                    out[i] = ck_host_strdup(ctx, tmp[i] ? tmp[i] : "");
                H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, tmp);
                *count = (int)n;
            }
            ck_host_free(ctx, tmp);
        } else {
            size_t sz = H5Tget_size(ty);
            char *buf = sz && sz < 65536 ? (char *)ck_host_calloc(ctx, (size_t)n, sz) : NULL;
            *oom |= sz && sz < 65536 && !buf;
            H5Tset_size(mt, sz);
            if (buf && out && H5Aread(a, mt, buf) >= 0) {
                for (hssize_t i = 0; i < n; ++i)
                    out[i] = strndup_ctx(ctx, buf + (size_t)i * sz, sz);
                *count = (int)n;
            }
            ck_host_free(ctx, buf);
        }
        H5Tclose(mt);
    }
    h5_close3(sp, ty, a);
    for (int i = 0; out && i < *count; ++i)
        if (!out[i])
            *count = 0, *oom = 1;
    if (out && *count == 0) {
        /* a failed copy leaves a gap: free every slot, not only up to the first NULL */
        for (hssize_t i = 0; i < n; ++i)
            ck_host_free(ctx, out[i]);
        ck_host_free(ctx, out);
        out = NULL;
    }
    return out;
}

/* Group g's weight_names attribute (the legacy layout's dataset order), NULL when the group or
 * the attribute is missing; *oom when memory ran out. */
static char **weight_names(h5s *S, hid_t f, const char *g, int *nn, int *oom) {
    hid_t grp = H5Gopen2(f, g, H5P_DEFAULT);
    char **names = grp >= 0 ? read_str_attr(S->ctx, grp, "weight_names", nn, oom) : NULL;
    if (grp >= 0)
        H5Gclose(grp);
    return names;
}

/* Legacy layout under base ("" or "model_weights"): the layer's group by name, its datasets in
 * the weight_names attribute's order. */
static ck_status read_legacy(h5s *S, hid_t f, const char *base, const ck_kio_plan *P, float *w) {
    for (int i = 0; i < P->count; ++i) {
        const ck_kio_layer *L = &P->layers[i];
        if (!L->nvars)
            continue;
        char g[192];
        snprintf(g, sizeof g, "%s%s%s", base, *base ? "/" : "", L->name);
        if (!path_exists(f, g))
            return ck_fail(S->ctx, CK_STATUS_SHAPE_MISMATCH,
                           "%s: layer '%s' (%s): no weights for it in the file (no group %s)",
                           S->what, L->name, L->cls, g);
        int nn = 0, oom = 0;
        char **names = weight_names(S, f, g, &nn, &oom);
        if (oom)
            return ck_fail(S->ctx, CK_STATUS_ALLOC_FAILED,
                           "%s: layer '%s': out of host memory reading its weight_names", S->what,
                           L->name);
        if (nn != L->nvars) {
            free_strs(S->ctx, names);
            return ck_fail(S->ctx, CK_STATUS_SHAPE_MISMATCH,
                           "%s: layer '%s' (%s): the file has %d weights for it, the model %d",
                           S->what, L->name, L->cls, nn, L->nvars);
        }
        ck_status st = CK_STATUS_SUCCESS;
        for (int k = 0; k < L->nvars && st == CK_STATUS_SUCCESS; ++k) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s", g, names[k]);
            st = read_var(S, f, p, L, &L->vars[k], k, w + L->vars[k].offset);
        }
        free_strs(S->ctx, names);
        CK_TRY(st);
    }
    return CK_STATUS_SUCCESS;
}

/* The plan's trainable weight arrays (each has its optimizer state). */
static int plan_trainable_vars(const ck_kio_plan *P) {
    int n = 0;
    for (int i = 0; i < P->count; ++i)
        for (int k = 0; k < P->layers[i].nvars; ++k)
            n += P->layers[i].vars[k].param_off >= 0;
    return n;
}

/* Keras 3's optimizer variables (in ck_kio_opt_var's order): as optimizer/vars/<i> (names
 * NULL), or in a legacy .h5 as optimizer_weights/<names[i]> (its weight_names attribute, in the
 * same order). */
static ck_status read_opt(h5s *S, hid_t f, const ck_kio_plan *P, ck_kio_opt *o, int *found,
                          char **names, int nnames) {
    *found = 0;
    long long n = names ? nnames : group_size(f, "optimizer/vars");
    char p[512];
#define OPT_VAR(i)                                                                                 \
    (names ? snprintf(p, sizeof p, "optimizer_weights/%s", names[i])                               \
           : snprintf(p, sizeof p, "optimizer/vars/%d", (i)),                                      \
     p)
    const int ntrain = plan_trainable_vars(P);
    const int per = ck_kio_opt_per(o);
    if (n != 2 + (long long)per * ntrain)
        return CK_STATUS_SUCCESS; /* none, or another optimizer's: the model's stays */
    hid_t ds = H5Dopen2(f, OPT_VAR(0), H5P_DEFAULT);
    hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
    hid_t ty = ds >= 0 ? H5Dget_type(ds) : -1;
    long long it = -1;
    /* one integer element, read into one long long: never more than &it holds */
    herr_t e = sp >= 0 && ty >= 0 && H5Tget_class(ty) == H5T_INTEGER &&
                       H5Sget_simple_extent_npoints(sp) == 1 && storage_holds(ds, H5Tget_size(ty))
                   ? H5Dread(ds, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, &it)
                   : -1;
    h5_close3(ty, sp, ds);
    if (e < 0 || it < 0)
        return ck_fail(S->ctx, CK_STATUS_BAD_PARAM,
                       "%s: %s (iterations) is not a non-negative integer", S->what, OPT_VAR(0));
    int j = 0;
    ck_kio_layer opt_layer = {.name = "optimizer", .cls = "optimizer"};
    for (int i = 0; i < P->count; ++i)
        for (int k = 0; k < P->layers[i].nvars; ++k) {
            const ck_kio_var *v = &P->layers[i].vars[k];
            if (v->param_off < 0)
                continue;
            for (int r = 0; r < per; ++r) {
                float *arr;
                const int x = ck_kio_opt_var(o, ntrain, j, r, &arr);
                snprintf(opt_layer.name, sizeof opt_layer.name, "%s", P->layers[i].name);
                CK_TRY(read_var(S, f, OPT_VAR(x), &opt_layer, v, x, arr + v->param_off));
            }
            ++j;
        }
    o->step = it;
    *found = 1;
    return CK_STATUS_SUCCESS;
#undef OPT_VAR
}

/* A legacy whole-model .h5's optimizer_weights (Keras 3 writes them in the order of its
 * optimizer's variables, named by path: "adam/iteration", "adam/conv2d_kernel_momentum", ...). */
static ck_status read_opt_legacy(h5s *S, hid_t f, const ck_kio_plan *P, ck_kio_opt *o, int *found) {
    *found = 0;
    if (!path_exists(f, "optimizer_weights"))
        return CK_STATUS_SUCCESS;
    int nn = 0, oom = 0;
    char **names = weight_names(S, f, "optimizer_weights", &nn, &oom);
    if (oom)
        return ck_fail(S->ctx, CK_STATUS_ALLOC_FAILED,
                       "%s: out of host memory reading optimizer_weights' weight_names", S->what);
    ck_status st = names ? read_opt(S, f, P, o, found, names, nn) : CK_STATUS_SUCCESS;
    free_strs(S->ctx, names);
    return st;
}

ck_status ck_kio_h5_read(ck_context *ctx, const void *image, size_t len, const char *path,
                         const char *what, const ck_kio_plan *plan, float *w, ck_kio_opt *opt,
                         int *found) {
    h5s S = {ctx, what, NULL, NULL};
    quiet_begin(&S);
    if (found)
        *found = 0;
    hid_t f = open_file(image, len, path);
    ck_status st = CK_STATUS_SUCCESS;
    if (f < 0) {
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: not an HDF5 file, or a corrupt one", what);
    } else if (H5Aexists(f, "layer_names") > 0) {
        st = read_legacy(&S, f, "", plan, w);
    } else if (path_exists(f, "model_weights")) {
        st = read_legacy(&S, f, "model_weights", plan, w);
        if (st == CK_STATUS_SUCCESS && opt)
            st = read_opt_legacy(&S, f, plan, opt, found);
    } else {
        for (int i = 0; i < plan->count && st == CK_STATUS_SUCCESS; ++i) {
            const ck_kio_layer *L = &plan->layers[i];
            char g[160];
            snprintf(g, sizeof g, "layers/%s/vars", L->group);
            long long n = group_size(f, g);
            if (L->nvars && n < 0) {
                st = ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                             "%s: layer '%s' (%s): no weights for it in the file (no group %s)",
                             what, L->name, L->cls, g);
            } else if (n >= 0 && n != L->nvars) {
                st = ck_fail(ctx, CK_STATUS_SHAPE_MISMATCH,
                             "%s: layer '%s' (%s): the file has %lld weights for it (%s), the "
                             "model %d",
                             what, L->name, L->cls, n, g, L->nvars);
            }
            for (int k = 0; k < L->nvars && st == CK_STATUS_SUCCESS; ++k) {
                char p[192];
                snprintf(p, sizeof p, "%s/%d", g, k);
                st = read_var(&S, f, p, L, &L->vars[k], k, w + L->vars[k].offset);
            }
        }
        if (st == CK_STATUS_SUCCESS && opt)
            st = read_opt(&S, f, plan, opt, found, NULL, 0);
    }
    if (f >= 0)
        H5Fclose(f);
    quiet_end(&S);
    return st;
}

static char *read_scalar_str_attr(ck_context *ctx, hid_t f, const char *name, int *oom) {
    int n = 0;
    char **s = read_str_attr(ctx, f, name, &n, oom);
    char *r = n == 1 ? s[0] : NULL;
    if (r)
        s[0] = NULL;
    for (int i = 1; s && i < n; ++i)
        ck_host_free(ctx, s[i]);
    ck_host_free(ctx, s);
    return r;
}

ck_status ck_kio_h5_model_config(ck_context *ctx, const char *path, char **config,
                                 char **training_config) {
    h5s S = {ctx, path, NULL, NULL};
    quiet_begin(&S);
    *config = *training_config = NULL;
    hid_t f = open_file(NULL, 0, path);
    ck_status st = CK_STATUS_SUCCESS;
    int oom = 0;
    if (f < 0) {
        st = ck_fail(ctx, CK_STATUS_BAD_PARAM, "path: %s is not an HDF5 file, or a corrupt one",
                     path);
    } else if (!(*config = read_scalar_str_attr(ctx, f, "model_config", &oom)) && oom) {
        st = ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                     "path: %s: out of host memory reading its model_config", path);
    } else if (!*config) {
        st = ck_fail(ctx, CK_STATUS_NOT_SUPPORTED,
                     "path: %s has no model_config: a weights-only file (load it into a model "
                     "with ck_model_load_keras_weights / --weights)",
                     path);
    } else {
        *training_config = read_scalar_str_attr(ctx, f, "training_config", &oom);
        if (oom) {
            ck_host_free(ctx, *config);
            *config = NULL;
            st = ck_fail(ctx, CK_STATUS_ALLOC_FAILED,
                         "path: %s: out of host memory reading its training_config", path);
        }
    }
    if (f >= 0)
        H5Fclose(f);
    quiet_end(&S);
    return st;
}

/* ---- writing ------------------------------------------------------------------------------- */
static int write_ds(hid_t loc, const char *name, hid_t mtype, int rank, const long long *dims,
                    const void *data) {
    hsize_t d[4];
    for (int k = 0; k < rank; ++k)
        d[k] = (hsize_t)dims[k];
    hid_t sp = rank ? H5Screate_simple(rank, d, NULL) : H5Screate(H5S_SCALAR);
    hid_t ftype = mtype == H5T_NATIVE_FLOAT ? H5T_IEEE_F32LE : H5T_STD_I64LE;
    hid_t ds =
        sp >= 0 ? H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int ok = ds >= 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    if (ds >= 0)
        H5Dclose(ds);
    if (sp >= 0)
        H5Sclose(sp);
    return ok ? 0 : -1;
}

/* Group path/vars (path NULL: vars in parent) with Keras's "name" attribute. */
static hid_t make_vars(hid_t parent, const char *path, const char *name) {
    hid_t g = path ? H5Gcreate2(parent, path, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : parent;
    if (g < 0)
        return -1;
    hid_t v = H5Gcreate2(g, "vars", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (path)
        H5Gclose(g);
    if (v < 0)
        return -1;
    hid_t ty = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(ty, H5T_VARIABLE);
    H5Tset_cset(ty, H5T_CSET_UTF8);
    hid_t a = H5Acreate2(v, "name", ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, ty, &name) >= 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(ty);
    if (!ok) {
        H5Gclose(v);
        return -1;
    }
    return v;
}

ck_status ck_kio_h5_write(ck_context *ctx, const ck_kio_plan *plan, const float *w,
                          const ck_kio_opt *opt, const char *model_name, void **image,
                          size_t *len) {
    h5s S = {ctx, "weights", NULL, NULL};
    quiet_begin(&S);
    *image = NULL;
    *len = 0;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t f = -1;
    if (fapl >= 0 && H5Pset_fapl_core(fapl, 1 << 20, 0) >= 0 &&
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0)
        f = H5Fcreate("keras-weights-out", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0)
        H5Pclose(fapl);
    int bad = f < 0;
    hid_t layers = bad ? -1 : H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad = bad || layers < 0;
    for (int i = 0; !bad && i < plan->count; ++i) {
        const ck_kio_layer *L = &plan->layers[i];
        hid_t v = make_vars(layers, L->group, L->name);
        bad = v < 0;
        for (int k = 0; !bad && k < L->nvars; ++k) {
            char nm[16];
            snprintf(nm, sizeof nm, "%d", k);
            bad = write_ds(v, nm, H5T_NATIVE_FLOAT, L->vars[k].rank, L->vars[k].dims,
                           w + L->vars[k].offset) != 0;
        }
        if (v >= 0)
            H5Gclose(v);
    }
    if (layers >= 0)
        H5Gclose(layers);
    if (!bad && opt) {
        hid_t v = make_vars(f, "optimizer", ck_optimizer_name(opt->type));
        const int per = ck_kio_opt_per(opt);
        bad = v < 0;
        const int ntrain = plan_trainable_vars(plan);
        int j = 0;
        if (!bad)
            bad = write_ds(v, "0", H5T_NATIVE_LLONG, 0, NULL, &opt->step) != 0;
        if (!bad)
            bad = write_ds(v, "1", H5T_NATIVE_FLOAT, 0, NULL, &opt->lr) != 0;
        for (int i = 0; !bad && i < plan->count; ++i)
            for (int k = 0; !bad && k < plan->layers[i].nvars; ++k) {
                const ck_kio_var *x = &plan->layers[i].vars[k];
                for (int r = 0; !bad && x->param_off >= 0 && r < per; ++r) {
                    char nm[16];
                    float *arr;
                    snprintf(nm, sizeof nm, "%d", ck_kio_opt_var(opt, ntrain, j, r, &arr));
                    bad = write_ds(v, nm, H5T_NATIVE_FLOAT, x->rank, x->dims, arr + x->param_off) !=
                          0;
                }
                j += x->param_off >= 0;
            }
        if (v >= 0)
            H5Gclose(v);
    }
    if (!bad) {
        hid_t v = make_vars(f, NULL, model_name);
        bad = v < 0;
        if (v >= 0)
            H5Gclose(v);
    }
    ssize_t n = -1;
    if (!bad && H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0)
        n = H5Fget_file_image(f, NULL, 0);
    void *buf = n > 0 ? ck_host_alloc(ctx, (size_t)n) : NULL;
    const int oom = n > 0 && !buf;
    if (buf && H5Fget_file_image(f, buf, (size_t)n) != n) {
        ck_host_free(ctx, buf);
        buf = NULL;
    }
    if (f >= 0)
        H5Fclose(f);
    quiet_end(&S);
    if (oom)
        return ck_host_oom(ctx, "weights: the HDF5 file image", (size_t)n);
    if (!buf)
        return ck_fail(ctx, CK_STATUS_INTERNAL, "weights: HDF5 could not write the weights");
    *image = buf;
    *len = (size_t)n;
    return CK_STATUS_SUCCESS;
}
