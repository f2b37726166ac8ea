/* Shared by the study's files: the residual placements (study_resid.c) for the variant list
 * (study.c). */
#ifndef CNNKIT_STUDY_INTERNAL_H
#define CNNKIT_STUDY_INTERNAL_H

#include "cnnkit/model.h"

/* One unit of a placement, e.g. "B-R-C-B-R-C + x" (x: the shortcut); NULL for an unknown one. */
const char *ck_study_resid_unit_text(int placement);
/* The post-activation residual units of layers (ck_study_residual_variant can move them): 0
 * when there is none or any Add is not such a unit. */
int ck_study_resid_units(const ck_layer_desc *layers, int count);

#endif
