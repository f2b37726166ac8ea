/* libFuzzer target: the HDF5 weights reader (ck_model_load_keras_weights, libhdf5 underneath)
 * with fuzz_checkpoint.c's model and contract: a failed load changes nothing, a successful one
 * leaves a model that trains. CNNKIT_FUZZ_SAVE_SEED=path writes the model's .weights.h5 (how
 * fuzz/corpus/keras_h5/ was made). */
#define FUZZ_LOAD ck_model_load_keras_weights
#define FUZZ_SAVE ck_model_save_keras
#define FUZZ_TAG "weights.h5"
#include "fuzz_checkpoint.c"
