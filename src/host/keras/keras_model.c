/* ck_model_from_keras_text: the Keras text front end builds a model through the public API, so
 * the model core never calls the parser. */
#include "keras_internal.h"

#include "cnnkit/model.h"

#include <stdio.h>
#include <string.h>

CK_API ck_status ck_model_from_keras_text(ck_context *ctx, const char *text, ck_model **out,
                                          char *err, size_t err_len) {
    if (!ctx)
        return ck_fail(NULL, CK_STATUS_BAD_PARAM, "ctx: is NULL");
    ck_enter(ctx);
    if (!text || !out)
        return ck_fail(ctx, CK_STATUS_BAD_PARAM, "%s: is NULL", text ? "model" : "text");
    if (err && err_len)
        err[0] = '\0';
    ck_keras_model km;
    char perr[512];
    ck_status st = ck_kp_parse(ctx, text, &km, perr, sizeof perr);
    if (st != CK_STATUS_SUCCESS) {
        if (err && err_len)
            snprintf(err, err_len, "%s", perr);
        return ck_fail(ctx, st, "text: %s", perr);
    }
    if (km.loss[0] && strcmp(km.loss, "sparse_categorical_crossentropy") != 0 &&
        strcmp(km.loss, "categorical_crossentropy") != 0) {
        ck_kp_model_free(ctx, &km);
        if (err && err_len)
            snprintf(err, err_len,
                     "compile: loss '%s' is not supported (sparse_categorical_"
                     "crossentropy or categorical_crossentropy)",
                     km.loss);
        return ck_fail(ctx, CK_STATUS_NOT_SUPPORTED, "text: loss '%s' is not supported", km.loss);
    }
    ck_model *m = NULL;
    st = ck_model_create(ctx, &m);
    for (int i = 0; st == CK_STATUS_SUCCESS && i < km.count; ++i)
        st = ck_model_add(m, &km.layers[i]);
    if (st == CK_STATUS_SUCCESS && km.has_compile)
        st = ck_model_set_optimizer(m, &km.optimizer);
    if (st == CK_STATUS_SUCCESS && km.has_precision)
        st = ck_model_set_precision(m, (ck_precision)km.precision);
    if (st == CK_STATUS_SUCCESS)
        st = ck_model_set_name(m, km.name, km.input_name);
    if (st != CK_STATUS_SUCCESS) {
        if (err && err_len)
            snprintf(err, err_len, "%s", ck_context_last_error(ctx));
        ck_model_destroy(m);
        ck_kp_model_free(ctx, &km);
        return st;
    }
    if (err && err_len)
        snprintf(err, err_len, "%s", km.warnings);
    ck_kp_model_free(ctx, &km);
    *out = m;
    return CK_STATUS_SUCCESS;
}
