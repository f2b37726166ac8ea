/* The pointer members of the struct types cnnkit passes to kernels by value (kemu_device.h): each
 * one a kernel may dereference is checked when the launch runs, as a pointer argument is. */
#include "kemu_device.h"

#include "ck_geom.h"
#include "ck_kernels.h"

using kemu::check_member_pointer;
using kemu::launch_site;

void kemu_check_struct(const launch_site &at, int index, const ck_koffset &v) {
    check_member_pointer(at, index, "step", v.step);
}

void kemu_check_struct(const launch_site &at, int index, const ck_kbn &v) {
    check_member_pointer(at, index, "sd_step", v.sd_step);
    check_member_pointer(at, index, "partials", v.partials);
    check_member_pointer(at, index, "coef", v.coef);
    check_member_pointer(at, index, "sd_scales", v.sd_scales);
    check_member_pointer(at, index, "sync_local", v.sync_local);
    check_member_pointer(at, index, "sync_all", v.sync_all);
    /* exchange and exchange_user are the launcher's (host code), never read by a kernel */
}

/* shapes and geometry: numbers only */
void kemu_check_struct(const launch_site &, int, const ck_kshape &) {}
void kemu_check_struct(const launch_site &, int, const ck_conv_geom &) {}
