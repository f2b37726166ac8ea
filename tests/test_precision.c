/* ck_model_set_precision (issue 16): defaults, validation without half-changed state, and the
 * CUDA mapping (TF32 to the context's math, FP32 and bf16 to strict fp32). */
#include "common.h"

#include <stdio.h>
#include <string.h>

#include "cnnkit/model.h"

static ck_model *unbuilt(ck_context *ctx) {
    ck_model *m = NULL;
    char err[256];
    CK_OK(ctx, ck_model_from_keras_text(ctx, t_seed_cnn_text, &m, err, sizeof err));
    return m;
}

Test(precision, default_set_and_bad_enum) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = unbuilt(ctx);
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_FP32);
    cr_assert_eq(ck_model_precision(NULL), CK_PRECISION_FP32);
    cr_assert_str_eq(ck_precision_name(CK_PRECISION_FP32), "fp32");
    cr_assert_str_eq(ck_precision_name(CK_PRECISION_TF32), "tf32");
    cr_assert_str_eq(ck_precision_name(CK_PRECISION_BF16), "bf16");
    cr_assert_str_eq(ck_precision_name((ck_precision)7), "?");
    CK_OK(ctx, ck_model_set_precision(m, CK_PRECISION_BF16));
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_BF16);
    /* TF32 on a CPU context is stored and leaves the context's math alone */
    CK_OK(ctx, ck_model_set_precision(m, CK_PRECISION_TF32));
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_TF32);
    cr_assert_eq(ck_context_math(ctx), CK_MATH_STRICT_FP32);
    for (int bad = -1; bad <= 3; bad += 4) {
        cr_assert_eq(ck_model_set_precision(m, (ck_precision)bad), CK_STATUS_BAD_PARAM);
        cr_assert(strstr(ck_context_last_error(ctx), "precision"), "message: %s",
                  ck_context_last_error(ctx));
        cr_assert_eq(ck_model_precision(m), CK_PRECISION_TF32, "a refused value changed it");
    }
    cr_assert_eq(ck_model_set_precision(NULL, CK_PRECISION_BF16), CK_STATUS_BAD_PARAM);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

Test(precision, chosen_before_build) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    ck_model *m = t_model(ctx, t_seed_cnn_text, 2);
    cr_assert_eq(ck_model_set_precision(m, CK_PRECISION_BF16), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(ck_context_last_error(ctx), "precision"), "message: %s",
              ck_context_last_error(ctx));
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_FP32);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* On CUDA: bf16 is accepted and sets the context's math to strict fp32 (its convolutions choose
 * tensor-op math themselves; the fp32 GEMM of the logits stays strict), TF32 and FP32 write it. */
Test(gpu_bf16, precision_on_cuda_context) {
    ck_context *g = t_cuda_ctx_or_skip();
    ck_model *m = unbuilt(g);
    CK_OK(g, ck_context_set_math(g, CK_MATH_TF32)); /* so that the next line must change it */
    CK_OK(g, ck_model_set_precision(m, CK_PRECISION_BF16));
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_BF16);
    cr_assert_eq(ck_context_math(g), CK_MATH_STRICT_FP32);
    CK_OK(g, ck_model_set_precision(m, CK_PRECISION_TF32));
    cr_assert_eq(ck_context_math(g), CK_MATH_TF32);
    CK_OK(g, ck_model_set_precision(m, CK_PRECISION_FP32));
    cr_assert_eq(ck_context_math(g), CK_MATH_STRICT_FP32);
    ck_model_destroy(m);
    ck_context_destroy(g);
}

/* The model file's Keras policy sets the precision; other policies are refused with a message. */
static ck_status from_text(ck_context *ctx, const char *policy_line, ck_model **m, char *err,
                           size_t len) {
    static char text[8192];
    snprintf(text, sizeof text, "import keras\n%s\n%s", policy_line, t_seed_cnn_text);
    return ck_model_from_keras_text(ctx, text, m, err, len);
}

/* Keras gives a layer the policy in force when the layer is made (checked with Keras 3.15): a
 * call after every layer reaches none (it was applied; now it warns), a reset to float32 after
 * them leaves the layers mixed (it was applied: fp32), and layers made under two policies are
 * refused (one precision per model). */
Test(precision, keras_policy_reaches_the_layers_made_after_it) {
    static const char model[] = "model = Sequential()\nmodel.add(Conv2D(4, (3, 3), "
                                "input_shape=(8, 8, 1)))\nmodel.add(Flatten())\n";
    char text[1024], err[512];
    ck_keras_model km;
    snprintf(text, sizeof text, "%smixed_precision.set_global_policy('mixed_bfloat16')\n", model);
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert(km.precision == CK_PRECISION_FP32 && !km.has_precision);
    cr_assert(strstr(km.warnings, "line 4: the dtype policy set there reaches no layer"), "%s",
              km.warnings);
    ck_keras_model_free(&km);
    snprintf(text, sizeof text,
             "mixed_precision.set_global_policy('mixed_bfloat16')\n%s"
             "mixed_precision.set_global_policy('float32')\n",
             model);
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_SUCCESS, "%s", err);
    cr_assert(km.precision == CK_PRECISION_BF16 && km.has_precision);
    ck_keras_model_free(&km);
    snprintf(text, sizeof text,
             "model = Sequential()\nmodel.add(Conv2D(4, (3, 3), input_shape=(8, 8, 1)))\n"
             "mixed_precision.set_global_policy('mixed_bfloat16')\nmodel.add(Flatten())\n");
    cr_assert_eq(ck_keras_parse(text, &km, err, sizeof err), CK_STATUS_BAD_PARAM);
    cr_assert(strstr(err, "line 4, column 11: expected every layer under one dtype policy") &&
                  strstr(err, "(set_global_policy at line 3)"),
              "%s", err);
}

Test(precision, keras_global_policy) {
    ck_context *ctx = t_ctx(CK_DEVICE_CPU);
    char err[512];
    ck_model *m = NULL;
    CK_OK(ctx, from_text(ctx, "keras.mixed_precision.set_global_policy('mixed_bfloat16')", &m, err,
                         sizeof err));
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_BF16);
    ck_model_destroy(m);
    m = NULL;
    CK_OK(ctx,
          from_text(ctx, "mixed_precision.set_global_policy(\"float32\")", &m, err, sizeof err));
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_FP32);
    ck_model_destroy(m);
    m = NULL;
    cr_assert_neq(
        from_text(ctx, "mixed_precision.set_global_policy('mixed_float16')", &m, err, sizeof err),
        CK_STATUS_SUCCESS);
    cr_assert_null(m);
    cr_assert(strstr(err, "mixed_float16") && strstr(err, "not supported"), "err: %s", err);
    cr_assert_neq(from_text(ctx, "mixed_precision.set_global_policy(policy)", &m, err, sizeof err),
                  CK_STATUS_SUCCESS);
    cr_assert(strstr(err, "set_global_policy"), "err: %s", err);
    /* Keras 3's names for the same setting */
    const char *bf16[] = {"keras.config.set_dtype_policy('mixed_bfloat16')",
                          "tf.keras.mixed_precision.set_dtype_policy('mixed_bfloat16')"};
    for (int i = 0; i < 2; ++i) {
        m = NULL;
        CK_OK(ctx, from_text(ctx, bf16[i], &m, err, sizeof err));
        cr_assert_eq(ck_model_precision(m), CK_PRECISION_BF16, "%s", bf16[i]);
        ck_model_destroy(m);
    }
    /* settings that change what Keras computes are cnnkit's or refused, never dropped */
    const char *refused[][2] = {
        {"keras.config.set_dtype_policy('mixed_float16')", "mixed_float16"},
        {"keras.config.set_floatx('float16')", "set_floatx: 'float16'"},
        {"keras.backend.set_floatx('float64')", "set_floatx: 'float64'"},
        {"keras.config.set_image_data_format('channels_first')", "channels_first"}};
    for (int i = 0; i < 4; ++i) {
        m = NULL;
        cr_assert_neq(from_text(ctx, refused[i][0], &m, err, sizeof err), CK_STATUS_SUCCESS, "%s",
                      refused[i][0]);
        cr_assert_null(m);
        cr_assert(strstr(err, refused[i][1]) && strstr(err, "not supported"), "err: %s", err);
    }
    m = NULL;
    CK_OK(ctx, from_text(ctx,
                         "keras.config.set_floatx('float32')\n"
                         "keras.config.set_image_data_format('channels_last')\n"
                         "keras.backend.clear_session()",
                         &m, err, sizeof err));
    cr_assert_eq(ck_model_precision(m), CK_PRECISION_FP32);
    ck_model_destroy(m);
    /* whatever module or alias leads to them */
    const char *aliased[][2] = {
        {"from keras import backend as K\nK.set_floatx('float16')", "set_floatx: 'float16'"},
        {"from keras import mixed_precision as mp\nmp.set_global_policy('mixed_float16')",
         "mixed_float16"},
        {"tf.keras.mixed_precision.experimental.set_policy('mixed_float16')", "mixed_float16"}};
    for (int i = 0; i < 3; ++i) {
        m = NULL;
        cr_assert_neq(from_text(ctx, aliased[i][0], &m, err, sizeof err), CK_STATUS_SUCCESS, "%s",
                      aliased[i][0]);
        cr_assert(strstr(err, aliased[i][1]), "err: %s", err);
    }
    /* a setting cnnkit does not read is said, not dropped */
    m = NULL;
    CK_OK(ctx, from_text(ctx, "keras.config.set_epsilon(1e-5)", &m, err, sizeof err));
    cr_assert(strstr(err, "set_epsilon(...) is not read by cnnkit"), "%s", err);
    ck_model_destroy(m);
    /* model.fit(...) is skipped with a warning: its epochs and batch size are the CLI's */
    static char text[8192];
    snprintf(text, sizeof text, "%smodel.fit(x, y, epochs=5, batch_size=32)\n", t_seed_cnn_text);
    m = NULL;
    CK_OK(ctx, ck_model_from_keras_text(ctx, text, &m, err, sizeof err));
    cr_assert(strstr(err, "model.fit(...) is not run") && strstr(err, "--epochs"), "%s", err);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
}

/* --precision: train/evaluate/predict only, and only the three names. */
Test(precision, cli_option) {
    char out[8192];
    cr_assert_eq(t_run_cli("train examples/seed_cnn.py --precision fp16", out, sizeof out), 2, "%s",
                 out);
    cr_assert(strstr(out, "--precision must be fp32, tf32 or bf16, got 'fp16'"), "%s", out);
    cr_assert_eq(t_run_cli("summary examples/seed_cnn.py --precision bf16", out, sizeof out), 2,
                 "%s", out);
    cr_assert_eq(t_run_cli("train --help", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "--precision fp32|tf32|bf16"), "%s", out);
}
